"""Root daemon: loads bpf/, enriches kernel events and streams them to the inference service."""
