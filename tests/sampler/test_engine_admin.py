"""The engine admin client against loopback stand-ins for vLLM's and SGLang's admin routes (``fake_engines``):
the exact requests each engine receives (method, path, content type, JSON body), that the engine's state
ends where it should, and that every refusal or missing answer is one line naming the server, the call,
the status and what the engine said."""
import socket

import pytest
from fake_engines import FakeEngine

from sport_fast.sampler.engines import EngineAdmin, EngineError, reply_message

JSON = "application/json"


@pytest.fixture()
def vllm():
    engine = FakeEngine("vllm")
    yield engine
    engine.close()


@pytest.fixture()
def sglang():
    engine = FakeEngine("sglang")
    yield engine
    engine.close()


def adapter_folder(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return str(path)


def calls(engine) -> list[tuple]:
    """(method, path, body) of every request; each must have been sent as JSON."""
    types = {ctype for _, _, ctype, _ in engine.requests}
    assert types <= {JSON}, f"an admin call was sent as {types - {JSON}}, not {JSON}"
    return [(method, path, body) for method, path, _, body in engine.requests]


def test_vllm_takes_adapters_by_name_on_its_v1_routes_and_resets_its_prefix_cache(vllm, tmp_path):
    v1, v2 = adapter_folder(tmp_path / "v1"), adapter_folder(tmp_path / "v2")
    admin = EngineAdmin(vllm.url, "vllm", timeout_s=10)
    admin.load_adapter("run-v1", v1)
    assert admin.reset_prefix_cache() is True
    admin.load_adapter("run-v1", v2)  # the same name again: vLLM refuses a second load, so it is unloaded first
    assert calls(vllm) == [
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "run-v1"}),  # 404 (not loaded): ignored
        ("POST", "/v1/load_lora_adapter", {"lora_name": "run-v1", "lora_path": v1}),
        ("POST", "/reset_prefix_cache", {}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "run-v1"}),
        ("POST", "/v1/load_lora_adapter", {"lora_name": "run-v1", "lora_path": v2})]
    assert vllm.adapters == {"run-v1": v2} and vllm.flushes == 1


def test_vllm_without_dev_mode_has_no_reset_and_no_full_weights_and_nothing_is_sent_for_them(tmp_path):
    engine = FakeEngine("vllm", dev_mode=False)
    try:
        admin = EngineAdmin(engine.url, "vllm", timeout_s=10)
        assert admin.reset_prefix_cache() is False, "a 404 reset means the engine does not offer it"
        with pytest.raises(EngineError, match=r"^vllm at http://127\.0\.0\.1:\d+ cannot load full weights"):
            admin.update_weights(str(tmp_path))
        assert calls(engine) == [("POST", "/reset_prefix_cache", {})], "update_weights reached the server"
    finally:
        engine.close()


def test_sglang_takes_adapters_full_weights_and_a_cache_flush_on_its_root_routes(sglang, tmp_path):
    folder, full = adapter_folder(tmp_path / "v1"), tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    admin = EngineAdmin(sglang.url + "/", "sglang", timeout_s=10)  # a trailing slash changes nothing
    admin.load_adapter("run-v1", folder)
    admin.update_weights(str(full))
    assert admin.reset_prefix_cache() is True
    assert calls(sglang) == [
        ("POST", "/unload_lora_adapter", {"lora_name": "run-v1"}),  # 400 {"success": false}: ignored
        ("POST", "/load_lora_adapter", {"lora_name": "run-v1", "lora_path": folder}),
        ("POST", "/update_weights_from_disk", {"model_path": str(full)}),
        ("POST", "/flush_cache", {})]
    assert sglang.adapters == {"run-v1": folder} and sglang.weights == str(full) and sglang.flushes == 1


def refused(call) -> str:
    with pytest.raises(EngineError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, f"the error is not one line: {message!r}"
    return message


def test_refusals_are_one_line_errors_naming_server_call_status_and_what_the_engine_said(vllm, sglang, tmp_path):
    v, s = EngineAdmin(vllm.url, "vllm", timeout_s=10), EngineAdmin(sglang.url, "sglang", timeout_s=10)
    empty = str(tmp_path / "nothing")
    assert refused(lambda: v.load_adapter("run-v1", empty)) == (
        f"vllm at {vllm.root}: POST /v1/load_lora_adapter "
        f'{{"lora_name": "run-v1", "lora_path": "{empty}"}} -> HTTP 404: No adapter found for {empty}')
    assert refused(lambda: s.load_adapter("run-v1", empty)) == (
        f"sglang at {sglang.root}: POST /load_lora_adapter {{\"lora_name\": \"run-v1\", \"lora_path\": \"{empty}\"}}"
        f" -> HTTP 400: Failed to load LoRA adapter run-v1: no adapter_config.json in {empty}")
    assert refused(lambda: s.update_weights(empty)).endswith(
        f"POST /update_weights_from_disk {{\"model_path\": \"{empty}\"}} -> HTTP 400: "
        f"Failed to get weights iterator: {empty} (repository not found).")
    sglang.busy = True  # SGLang does not flush while requests run, and says so over two lines
    assert refused(lambda: s.reset_prefix_cache(wait_s=0.5)).endswith(
        "POST /flush_cache {} -> HTTP 400: Cache flushed. Please check backend logs for more details. (When there "
        "are running or waiting requests, the operation will not be performed.) (still refused after 0.5 s of "
        "asking again)")
    assert sglang.flushes == 0 and sglang.adapters == {} and sglang.weights is None
    assert [p for _, p, _ in calls(sglang)].count("/flush_cache") >= 2, "a busy server must be asked again"


def test_a_busy_sglang_is_asked_again_until_it_flushes(sglang):
    """SGLang answers /flush_cache with 400 while other requests run; publishing waits for them instead of
    stopping the run, and flushes once they are done."""
    import threading
    sglang.busy = True
    threading.Timer(0.6, lambda: setattr(sglang, "busy", False)).start()
    assert EngineAdmin(sglang.url, "sglang", timeout_s=10).reset_prefix_cache(wait_s=30) is True
    flushes = [p for _, p, _ in calls(sglang)].count("/flush_cache")
    assert sglang.flushes == 1 and flushes >= 2, (sglang.flushes, flushes)


def test_replies_no_engine_should_give_are_refusals_too(vllm, tmp_path):
    admin, folder = EngineAdmin(vllm.url, "vllm", timeout_s=10), adapter_folder(tmp_path / "v1")
    vllm.scripted["/v1/load_lora_adapter"] = (200, {"success": False, "error_message": "out of\nslots"}, JSON)
    assert refused(lambda: admin.load_adapter("run-v1", folder)).endswith(
        "-> HTTP 200 but refused: out of slots")
    page = b"<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n"
    vllm.scripted["/v1/load_lora_adapter"] = (502, page, "text/html")
    assert refused(lambda: admin.load_adapter("run-v1", folder)).endswith(
        "-> HTTP 502: <html> <body> <h1>502 Bad Gateway</h1> </body> </html>")
    vllm.scripted["/reset_prefix_cache"] = (500, {"object": "error", "message": "engine dead", "code": 500}, JSON)
    assert refused(admin.reset_prefix_cache).endswith("POST /reset_prefix_cache {} -> HTTP 500: engine dead")
    vllm.scripted["/reset_prefix_cache"] = (500, b"", "text/plain")
    assert refused(admin.reset_prefix_cache).endswith("-> HTTP 500: (empty reply)")


def test_a_server_that_is_not_there_or_does_not_answer_in_time_is_named(vllm, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = EngineAdmin(f"http://127.0.0.1:{port}/v1", "vllm", timeout_s=5)
    assert refused(gone.reset_prefix_cache) == (
        f"vllm at http://127.0.0.1:{port}: POST /reset_prefix_cache {{}} failed: [Errno 111] Connection refused "
        "(timeout 5 s)")
    vllm.delay_s = 2.0
    slow = EngineAdmin(vllm.url, "vllm", timeout_s=0.5)
    assert refused(slow.reset_prefix_cache).endswith("POST /reset_prefix_cache {} failed: timed out (timeout 0.5 s)")


def test_reply_message_reads_each_engines_error_shape():
    assert reply_message(b'{"error": {"message": "bad", "type": "BadRequestError", "code": 400}}') == "bad"
    assert reply_message(b'{"object": "error", "message": "old vllm", "code": 400}') == "old vllm"
    assert reply_message(b'{"success": false, "error_message": "sglang lora"}') == "sglang lora"
    assert reply_message(b'{"detail": [{"loc": ["body", "lora_name"], "msg": "Field required"}]}') == (
        '[{"loc": ["body", "lora_name"], "msg": "Field required"}]')
    assert reply_message(("x" * 400).encode()) == "x" * 297 + "..."
