"""chats: /api/chats with UUID chat ids and /api/auth cookie sessions (seeds 002 and 003)."""
from api.dialects.chats import routes
from api.dialects.chats.routes import auth_blp, blp, render_error

__all__ = ["auth_blp", "blp", "render_error", "routes"]
