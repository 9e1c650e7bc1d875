"""imagetwin_async: an asyncio SDK for the Imagetwin API."""
