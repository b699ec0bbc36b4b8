"""Root agent: turns predictions into prepared memory within a budget, and reports what it was worth."""
