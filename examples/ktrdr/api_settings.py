"""What both api servers (api.py, api_threaded.py) read from their
environment: their name, where the host service is, the worker registry."""
import logging
import os

SERVICE = os.environ.get("OTEL_SERVICE_NAME", "ktrdr-api")
logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {SERVICE} %(message)s")
log = logging.getLogger(SERVICE)

IB_HOST_URL = os.environ["KTRDR_IB_HOST_URL"]
WORKERS = {
    "training": os.environ["KTRDR_TRAINING_WORKERS"].split(","),
    "backtest": os.environ["KTRDR_BACKTEST_WORKERS"].split(","),
}
