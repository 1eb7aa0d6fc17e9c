"""shardflow: run one Python function over millions of records, durably.

The public API is what ``__all__`` names (a test checks it); everything else is private.
"""

from shardflow.errors import (
    ConfigError,
    HandlerError,
    InfrastructureError,
    PermanentError,
    ShardflowError,
    TransientError,
)
from shardflow.worker.handler import batch_handler

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HandlerError",
    "InfrastructureError",
    "PermanentError",
    "ShardflowError",
    "TransientError",
    "__version__",
    "batch_handler",
]
