from ninja import NinjaAPI

from app.api.auth import Caller
from app.api.bulk import router as bulk_router
from app.api.contracts import router as contracts_router
from app.api.grants import router as grants_router
from app.api.messages import router as messages_router
from app.api.outages import refuse_during_outages
from app.api.outbox import router as outbox_router
from app.api.tokens import router as tokens_router
from app.api.topic_resources import router as topic_resources_router
from app.api.topics import router as topics_router
from app.api.unstorable import refuse_nul
from app.api.work_requests import router as work_requests_router
from app.api.worker_polling import router as worker_polling_router
from app.api.workers import router as workers_router

# One auth for every operation (but the workers' own, app/api/worker_auth.py): it resolves the caller and
# holds session writes to Django's CSRF check.
api = NinjaAPI(title="Switchyard", version="1", urls_namespace="api-v1", auth=Caller())
api.add_router("/", topics_router)
api.add_router("/", topic_resources_router)
api.add_router("/", messages_router)
api.add_router("/", grants_router)
api.add_router("/", outbox_router)
api.add_router("/", tokens_router)
api.add_router("/", contracts_router)
api.add_router("/", bulk_router)
api.add_router("/", work_requests_router)
api.add_router("/", workers_router)
# Its own auth (app/api/worker_auth.py): a worker's token, which Caller refuses.
api.add_router("/", worker_polling_router)
refuse_nul(api)
refuse_during_outages(api)
