"""beatbus's HTTP API, WebSocket event feed and live dashboard (FastAPI + uvicorn).

``api.app.create_app(bus, settings)`` builds the app; ``beatbus api`` serves it. Modules:
:mod:`.app` (the app: composes the routers), :mod:`.routes` (one router per area, and the route
table), :mod:`.state` (what the routes share, ``app.state.api``), :mod:`.models` (request/response
bodies), :mod:`.contract` (one error body everywhere, and the OpenAPI document that says so),
:mod:`.song_plan` (the metadata heuristic and audio analysis), :mod:`.rhythm` (rhythm mode),
:mod:`.sources` (live source state), :mod:`.control` (ControlEvent), :mod:`.hub` (stream -> WebSocket
fan-out), :mod:`.led_preview` (LED frames relayed from the broker), :mod:`.websocket` (refusing a
handshake, pumping a feed), :mod:`.deps` (the route guard: keys, scopes, rate limits), :mod:`.auth`
(API keys, hashed), :mod:`.ratelimit` (token buckets), :mod:`.server` (uvicorn in a thread; refuses a non-loopback
bind without keys) and ``static/`` (the dashboard).
"""
__all__: list[str] = []
