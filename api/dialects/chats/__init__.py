"""chats: /api/chats with UUID chat ids and /api/auth cookie sessions (seeds 002 and 003)."""
from api.dialects.chats.routes import DIALECT, auth_blp, blp, catalog_blp

__all__ = ["DIALECT", "auth_blp", "blp", "catalog_blp"]
