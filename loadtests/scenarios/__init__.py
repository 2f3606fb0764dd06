"""Load scenarios with locust: ``python -m loadtests.scenarios --help``. The locustfiles (webinar.py,
content_site.py, backend_sdk.py) and users.py run in locust's processes only; harness.py and ledger.py never
import locust."""
