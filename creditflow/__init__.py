"""creditflow: real-time marketing attribution on Bytewax, ClickHouse and Ray."""

__version__ = "0.1.0"
