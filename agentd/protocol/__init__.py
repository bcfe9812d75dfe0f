"""The wire contract as data: attrs types, the method table and the converter.

This package imports nothing else from agentd.
"""

from agentd.protocol.converter import (
    converter,
    describe_error,
    secret_values,
    structure,
    unstructure,
)
from agentd.protocol.methods import METHODS, Method
from agentd.protocol.types import PROTOCOL_VERSION

__all__ = [
    "METHODS",
    "PROTOCOL_VERSION",
    "Method",
    "converter",
    "describe_error",
    "secret_values",
    "structure",
    "unstructure",
]
