"""A FastAPI service checking uploaded manuscripts with Imagetwin; results come by callback."""
