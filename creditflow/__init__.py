"""creditflow: real-time marketing attribution on Bytewax, ClickHouse and Ray."""

__version__ = "0.1.0"

from creditflow.native import install as _install_native

# Serve the mypyc-compiled hot modules when their build matches the source (see creditflow/native.py).
_install_native()
