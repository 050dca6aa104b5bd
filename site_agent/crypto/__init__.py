"""Keys, certificates and signatures.

In dependency order: ``signing`` (Ed25519 keys), ``certs`` (consortium CA, leaf certificates,
TLS 1.3 contexts), ``envelope`` (the analyst's signed query). Nothing here opens a socket.
"""
