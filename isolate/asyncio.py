"""asyncio's subprocess API with the child in a sandbox: an asyncio program switches by
changing one import.

    from isolate import asyncio as isolate_asyncio
    proc = await isolate_asyncio.create_subprocess_exec("id", profile="default", stdout=PIPE)

The implementation lives in the launch layer (isolate/launch/asyncio.py).
"""

from .launch.asyncio import *  # noqa: F401,F403
from .launch.asyncio import __all__  # noqa: F401
