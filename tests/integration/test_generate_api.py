"""The generation routes through a real uvicorn server, a real broker and an in-process rq worker."""
from __future__ import annotations

import io
import threading
import time

import httpx
import msgspec
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from music21 import converter
from music21 import tempo as m21tempo
from rq.registry import FailedJobRegistry

from beatbus import keys
from beatbus.bus import Bus
from beatbus.consumers.generate.api import build_router
from beatbus.consumers.generate.jobqueue import GenerationQueue
from beatbus.consumers.generate.spec import GenerationJob, build_job, parse_params
from beatbus.schemas import AudioFrame, BeatEvent, SectionEvent, float_to_pcm

from support.generate import UvicornThread, build_models, context, encode, gen_config, offering, tone, work_burst
from support.procs import free_port


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def config(models, tmp_path):
    return gen_config(tmp_path / "state", models)       # per test: uploads of one test never show in another


@pytest.fixture
def server(broker, config):
    bus = Bus.connect(broker.url, name="generate-api-test")
    app = FastAPI()
    app.include_router(build_router(bus, config))
    with UvicornThread(app, free_port()) as srv:
        yield srv
    bus.close()


@pytest.fixture
def client(server, bus, ctx):
    with offering(ctx, bus), httpx.Client(base_url=server.url, timeout=30, trust_env=False) as c:
        yield c                                 # a live worker offers every model: the API queues


@pytest.fixture
def ctx(bus, broker, config):
    return context(bus, broker, config)


def upload(client, data: bytes, name: str = "take.wav", field: str = "file") -> httpx.Response:
    return client.post("/api/upload", files={field: (name, data, "application/octet-stream")})


class Poller:
    """Polls a job's status over HTTP while the worker runs in the main thread."""

    def __init__(self, client_url: str, generation_id: str):
        self.url, self.id, self.seen, self.stop = client_url, generation_id, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as c:
            while not self.stop.is_set():
                st = c.get(f"/api/status/{self.id}").json()
                self.seen.append((st["status"], st["progress"]))
                time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def test_upload_embed_generate_progress_download(client, server, ctx, bus):
    first = upload(client, encode(tone(3.0, freqs=(220.0, 277.18, 329.63)), 22050), name="../../../etc/passwd.wav")
    assert first.status_code == 201, first.text
    body = first.json()
    audio_id = body["audio_id"]
    assert body["duration"] == pytest.approx(3.0, abs=0.01) and body["sr"] == 22050 and body["name"] == "passwd.wav"
    assert body["embedding"]["status"] == "queued"
    second = upload(client, encode(tone(3.0, freqs=(220.0,)), 44100, "FLAC"), name="other.flac").json()["audio_id"]
    stored = sorted(p.name for p in ctx.store.uploads.iterdir())
    assert stored == sorted([audio_id, second])                     # generated ids only; nothing else on disk
    assert client.get(f"/api/embedding/{audio_id}").status_code == 202
    assert client.get(f"/api/similar/{audio_id}").status_code == 409

    r = client.post(f"/api/generate/{audio_id}", json={"prompt": "lofi", "duration": 5, "seed": 1, "tempo": 90})
    assert r.status_code == 202, r.text
    gen = r.json()
    gid = gen["generation_id"]
    assert gen["prompt"] == "lofi, 90 bpm" and gen["status_url"] == f"/api/status/{gid}"
    st = client.get(f"/api/status/{gid}").json()
    assert (st["status"], st["progress"], st["position"]) == ("queued", 0, 2)     # behind the two embeddings
    assert client.get(f"/api/download/{gid}").status_code == 409

    with Poller(server.url, gid) as poll:
        assert work_burst(ctx, bus)
    progress = [p for s, p in poll.seen]
    assert progress == sorted(progress)                                   # never goes back
    assert any(s == "started" and 0 < p < 100 for s, p in poll.seen), poll.seen
    st = client.get(f"/api/status/{gid}").json()
    assert (st["status"], st["progress"], st["download"]) == ("finished", 100, f"/api/download/{gid}")
    assert st["result"]["mode"] == "continuation" and "audio_path" not in str(st)   # no server paths

    wav = client.get(f"/api/download/{gid}")
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    x, sr = sf.read(io.BytesIO(wav.content))
    assert sr == 32000 and abs(len(x) - 5 * 32000) <= 640                  # within one codec frame (exact here)
    meta = client.get(f"/api/download/{gid}", params={"format": "json"}).json()
    assert meta["prompt"] == "lofi, 90 bpm" and meta["conditioning_audio"] == audio_id and meta["sr"] == 32000
    assert client.get(f"/api/download/{gid}", params={"format": "mid"}).status_code == 404

    emb = client.get(f"/api/embedding/{audio_id}").json()
    assert emb["dim"] == 512 and np.linalg.norm(emb["embedding"]) == pytest.approx(1.0, abs=1e-4)
    sim = client.get(f"/api/similar/{audio_id}", params={"k": 3}).json()
    assert [h["audio_id"] for h in sim["results"]] == [second]


def test_openapi_documents_the_routes(client):
    doc = client.get("/openapi.json").json()
    assert {"/api/upload", "/api/generate", "/api/generate/{audio_id}", "/api/status/{generation_id}",
            "/api/download/{generation_id}", "/api/embedding/{audio_id}", "/api/similar/{audio_id}"} <= set(doc["paths"])
    body = doc["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["duration"]["anyOf"][0] == {"type": "number", "minimum": 5.0, "maximum": 120.0}


def test_lstm_through_the_api_returns_midi(client, ctx, bus, tmp_path):
    r = client.post("/api/generate", json={"kind": "lstm", "tempo": 100, "bars": 8, "key": "A minor", "seed": 3})
    assert r.status_code == 202, r.text
    gid = r.json()["generation_id"]
    assert work_burst(ctx, bus)
    st = client.get(f"/api/status/{gid}").json()
    assert st["status"] == "finished", st
    mid = client.get(f"/api/download/{gid}")
    assert mid.status_code == 200 and mid.headers["content-type"] == "audio/midi"
    (tmp_path / "x.mid").write_bytes(mid.content)
    back = converter.parse(tmp_path / "x.mid")
    assert [m.number for m in back.flatten().getElementsByClass(m21tempo.MetronomeMark)] == [100]
    assert sum(1 for n in back.flatten().notes if n.tie is None or n.tie.type == "start") == st["result"]["notes"]


def test_stream_conditioning_from_a_live_source(client, bus, config):
    now = time.time()
    for i in range(8):
        bus.publish(keys.stream("club", "beats"), BeatEvent(
            source="club", timestamp=i * 0.5, system_time=now, is_downbeat=i % 4 == 0, bpm=120.0, intensity=0.3,
            confidence=0.9, beat=i, beat_in_bar=i % 4 + 1, bar=i // 4, meter=4, next_beat_time=(i + 1) * 0.5,
            next_beat_system_time=now, emitted_at=now), maxlen=1000)
    bus.publish(keys.stream("club", "sections"), SectionEvent(
        source="club", start=2.0, system_time=now, emitted_at=now, label="bridge", confidence=0.9,
        status="confirmed"), maxlen=1000)
    x = tone(5.0)
    for seq, i in enumerate(range(0, len(x), 2205)):
        bus.publish(keys.stream("club", "audio"), AudioFrame(source="club", seq=seq, sample_index=i, wall_ns=1,
                                                             sr=22050, n_samples=2205, pcm=float_to_pcm(x[i:i + 2205])),
                    maxlen=1000)
    r = client.post("/api/generate", json={"source": "club", "duration": 6, "melody": True})
    assert r.status_code == 202, r.text
    assert r.json()["prompt"] == "mellow bridge, 120 bpm, A minor"
    job = GenerationQueue(bus.redis, config).fetch(r.json()["generation_id"])
    spec = msgspec.json.decode(job.args[0], type=GenerationJob)
    assert spec.melody and spec.audio_id and spec.request.source == "club" and spec.request.section == "bridge"
    r = client.post("/api/generate", json={"source": "silent", "melody": True})
    assert r.status_code == 422 and "melody" in r.json()["detail"]


@pytest.mark.parametrize("body, status, needle", [
    ({"duration": 200}, 422, "duration"), ({"duration": 2}, 422, "duration"), ({"temperature": 5}, 422, "temperature"),
    ({"top_k": 1000}, 422, "top_k"), ({"top_p": -0.1}, 422, "top_p"), ({"cfg_coef": 11}, 422, "cfg_coef"),
    ({"kind": "midi"}, 422, "kind"), ({"melody": True}, 422, "melody"), ({"kind": "lstm", "bars": 1}, 422, "bars"),
    ({"source": "no such/source"}, 422, "source"), ({"prompt": "x" * 600}, 422, "prompt"),
])
def test_bad_generation_parameters_are_4xx_with_the_field_named(client, body, status, needle):
    r = client.post("/api/generate", json=body)
    assert r.status_code == status and needle in r.json()["detail"], r.text


def test_unknown_ids_and_bad_uploads(client, config):
    unknown = "a" + "0" * 24
    assert client.post(f"/api/generate/{unknown}", json={}).status_code == 404
    audio_id = upload(client, encode(tone(1.0), 22050)).json()["audio_id"]
    r = client.post(f"/api/generate/{audio_id}", json={"kind": "lstm", "tempo": 100, "bars": 8})
    assert r.status_code == 422 and "takes no audio" in r.json()["detail"]
    for path in (f"/api/status/g{'0' * 24}", f"/api/download/g{'0' * 24}", f"/api/embedding/{unknown}",
                 f"/api/similar/{unknown}"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["detail"], path
    r = client.get("/api/status/bad%20id!")             # the id pattern is in the OpenAPI document
    assert r.status_code == 422 and "generation_id" in str(r.json()["detail"])
    assert client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 422

    r = upload(client, b"GIF89a this is not audio", name="song.wav")
    assert r.status_code == 415 and "not decodable audio" in r.json()["detail"]
    r = upload(client, encode(tone(31.0, 8000), 8000))                     # over the 30 s limit
    assert r.status_code == 413 and "30 s" in r.json()["detail"]
    big = b"\0" * (config.max_upload_bytes + 200_000)
    r = upload(client, big)
    assert r.status_code == 413, r.text
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    r = client.post("/api/upload", content=iter([head] + [big[:1 << 20]] * 3),   # chunked: no Content-Length
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    assert upload(client, encode(tone(1.0), 22050), field="audio").status_code == 422
    r = client.post("/api/upload", content=encode(tone(1.0), 22050), headers={"content-type": "audio/wav"})
    assert r.status_code == 415 and "multipart" in r.json()["detail"]
    assert not list(config.state_path.joinpath("generate", "uploads").glob("*/.tmp-*"))


def test_a_job_over_its_timeout_fails_cleanly_and_is_reported(client, ctx, bus, models, tmp_path):
    strict = gen_config(ctx.config.state_path, models, job_timeout_base=1.0, job_timeout_factor=0.0)
    spec = build_job(parse_params({"duration": 120, "prompt": "too long for one second"}))
    job = GenerationQueue(bus.redis, strict).submit(spec)
    assert job.timeout == 1
    assert work_burst(ctx, bus)
    st = client.get(f"/api/status/{spec.id}").json()
    assert st["status"] == "failed" and st["retries_left"] == 0                 # a timeout is not retried
    assert st["error"].startswith("timed out after 1 s") and "120.0 s of audio" in st["error"]
    assert 0 < st["progress"] < 100
    assert spec.id in FailedJobRegistry(queue=GenerationQueue(bus.redis, strict).queue).get_job_ids()
    r = client.get(f"/api/download/{spec.id}")
    assert r.status_code == 409 and "timed out" in r.json()["detail"]
    assert not ctx.store.result_dir(spec.id).exists()
