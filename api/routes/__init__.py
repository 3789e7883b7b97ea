"""The API's routes, one :class:`fastapi.APIRouter` per area (composed by :func:`api.app.create_app`).

Every guarded route names its scope, see :mod:`api.deps`: with API keys configured a route needs
``Authorization: Bearer <key>`` with that scope, a WebSocket the key as subprotocol ``bearer.<key>``
next to ``beatbus.v1``; without keys loopback clients only. Routes reach the app's broker,
settings and running parts through :data:`api.state.Api`.

=======  ===============================  =========  ==========================================
method   path                             scope      what (module)
=======  ===============================  =========  ==========================================
GET      /health                          (open)     status, service, backends, fpga_enabled
                                                     (:mod:`.health`)
GET      /metrics                         (open)     Prometheus (:mod:`.health`)
POST     /api/analyze-song                read       song plan from metadata (JSON) or audio
                                                     (:mod:`.analyze`)
POST     /api/start-rhythm-mode           trigger    song_data + duration -> triggers (:mod:`.rhythm`)
POST     /api/stop-rhythm-mode            trigger    stop it (:mod:`.rhythm`)
GET      /api/rhythm-mode                 read       is it running, outcomes so far (:mod:`.rhythm`)
POST     /api/beat-trigger                trigger    one manual trigger now (:mod:`.rhythm`)
GET      /api/sources                     read       every live source's state (:mod:`.sources`)
GET      /api/sources/{id}                read       one source's state (:mod:`.sources`)
POST     /api/sources/{id}/control        control    ControlEvent -> bb:{id}:control (:mod:`.sources`)
WS       /ws/{source}                     read       the source's events as JSON text (:mod:`.events`)
GET      /api/led/devices                 read       every running LED consumer's setup, and the
                                                     devices with a preview (:mod:`.led`)
POST     /api/led/devices                 control    add an LED device (:mod:`.led`)
PATCH    /api/led/devices/{name}          control    change one live (:mod:`.led`)
DELETE   /api/led/devices/{name}          control    remove one (:mod:`.led`)
GET      /api/led/effects                 read       effects, their parameters, palettes (:mod:`.led`)
GET      /api/led/presets                 read       every LED preset (:mod:`.led`)
POST     /api/led/presets                 control    save the devices' effects as one (:mod:`.led`)
POST     /api/led/presets/{name}/apply    control    apply one (:mod:`.led`)
DELETE   /api/led/presets/{name}          control    delete one (:mod:`.led`)
WS       /ws/led/{device}                 read       an LED device's frames (RGB bytes) (:mod:`.led`)
GET      /                                (open)     the dashboard, and ``/static`` (:mod:`.dashboard`)
GET      /docs, /redoc                    (open)     the OpenAPI document (``/openapi.json``) in
                                                     Swagger UI / ReDoc, no CDN (:mod:`.docs`)
=======  ===============================  =========  ==========================================
"""
__all__: list[str] = []
