"""pytest plugin for host shops: sandbox and HTTP-mock fixtures (being written)."""
