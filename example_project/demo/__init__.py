"""Kong's demo project: settings and URLs for a small fleet on 127.0.0.1."""
