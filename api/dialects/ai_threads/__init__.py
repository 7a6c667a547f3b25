"""ai-threads: /api/v1/ai/threads, integer thread ids (seeds 000 and 001); /api/v1/ai/reports and
/api/v1/ai/memories beside them."""
from api.dialects.ai_threads.people import memories_blp, reports_blp
from api.dialects.ai_threads.routes import DIALECT, blp

__all__ = ["DIALECT", "blp", "memories_blp", "reports_blp"]
