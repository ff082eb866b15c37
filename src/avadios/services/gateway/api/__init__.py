"""The local HTTP API: one APIRouter per area, one error handler, one auth dependency (assembled in `gateway.app`)."""
