from ninja import NinjaAPI

from app.api.grants import router as grants_router
from app.api.outbox import router as outbox_router
from app.api.topics import router as topics_router

api = NinjaAPI(title="Switchyard", version="1", urls_namespace="api-v1")
api.add_router("/", topics_router)
api.add_router("/", grants_router)
api.add_router("/", outbox_router)
