"""The HTTP endpoints, one ``APIRouter`` per concern, included by api_service.main."""
