"""Error-generator triggers: musical sections pick error patterns, beats fire them.

::

    bb:{src}:beats ──(consumer group)──┐
    bb:{src}:sections ──(fan-out)──────┴─> TriggerService ─> DeliveryThread ─> POST {url}/api/rhythm-trigger

Modules: :mod:`.patterns` (section -> pattern -> firing rule, as data), :mod:`.config`
(``TriggerConfig``), :mod:`.delivery` (HTTP client, retries, circuit breaker),
:mod:`.service` (the daemon) and :mod:`.cli`. Its test double (the reference receiver) and
benchmark are in :mod:`beatbus.lab`.
"""
from .config import TriggerConfig, load_trigger_config
from .delivery import CircuitBreaker, Delivery, DeliveryThread, Outcome, Result, Trigger
from .patterns import DEFAULT_PATTERNS, DEFAULT_SECTIONS, Firing, PatternBook, Rule
from .service import TriggerService, build_trigger_service, idempotency_key, trigger_payload

__all__ = ["TriggerConfig", "load_trigger_config", "CircuitBreaker", "Delivery", "DeliveryThread", "Outcome",
           "Result", "Trigger", "DEFAULT_PATTERNS", "DEFAULT_SECTIONS", "Firing", "PatternBook", "Rule",
           "TriggerService", "build_trigger_service", "idempotency_key", "trigger_payload"]
