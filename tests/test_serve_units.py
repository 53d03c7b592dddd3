"""Server building blocks without Ray: settings, schemas, security, media checks, text streaming, batching, decoding.

The HTTP-level behaviour (real server, real clients) is in test_serve.py; these pin the rules it relies on.
"""

import http.server
import os
import re
import threading
import time

import pytest

from serve.errors import APIError
from serve.settings import ServeSettings, check_expert_shards, hash_api_key
from serve_support import data_url, mp4_bytes, png_bytes

# ----------------------------------------------------------------------------------------------- helpers


def raises(status: int, fn, *args, contains: str | None = None, **kw) -> APIError:
    with pytest.raises(APIError) as ei:
        fn(*args, **kw)
    assert ei.value.status == status, (ei.value.status, ei.value.message)
    if contains:
        assert contains in ei.value.message, ei.value.message
    return ei.value


# ----------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("bad", [0, -2, 2.5, "2", True, None])
def test_expert_shards_must_be_a_positive_integer_and_the_error_names_the_value(bad):
    with pytest.raises(ValueError, match=rf"expert_shards must be a positive integer.*got {re.escape(repr(bad))}$"):
        check_expert_shards(bad)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        ServeSettings(expert_shards=bad)


def test_expert_shards_settings_and_deployment_resources(tiny_dir):
    from serve.app import deployment_options
    from serve.settings import check_expert_shards_fit

    check_expert_shards(1)
    s = ServeSettings(expert_shards=2, num_cpus=0.25, num_gpus=1.0, expert_placement="modality-aware")
    # the Serve replica actor feeds the gang: no GPU of its own (the rank actors hold them), its fractional CPU
    assert deployment_options(s)["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.0}
    assert deployment_options(ServeSettings(num_gpus=1.0))["ray_actor_options"]["num_gpus"] == 1.0
    with pytest.raises(ValueError, match="expert_placement must be one of.*'diagonal'"):
        ServeSettings(expert_shards=2, expert_placement="diagonal")
    with pytest.raises(ValueError, match="shard_num_cpus must be > 0, got 0"):
        ServeSettings(expert_shards=2, shard_num_cpus=0)
    check_expert_shards_fit(8, tiny_dir)
    with pytest.raises(ValueError, match="expert_shards=9: the checkpoint has 8 routed experts per pool"):
        check_expert_shards_fit(9, tiny_dir)
    check_expert_shards_fit(9, tiny_dir / "not-here")  # unreadable here (a cluster path): the replica checks it


def test_settings_refuse_unknown_keys_plain_keys_and_loose_prefixes():
    with pytest.raises(ValueError, match="unknown serve settings.*max_batch"):
        ServeSettings.from_dict({"max_batch": 3})
    with pytest.raises(ValueError, match="not the key itself"):
        ServeSettings.from_dict({"api_key": "secret"})
    with pytest.raises(ValueError, match="host part must end"):
        ServeSettings(allowed_url_prefixes=["https://images.example.com"])
    s = ServeSettings.from_dict({"api_key_sha256": hash_api_key("k"), "media_roots": ["."]})
    assert s.api_key_digest() == hash_api_key("k") and os.path.isabs(s.media_roots[0])
    assert ServeSettings().model_name() == "ernie-vl-tiny"


def test_serve_command_is_registered_and_bad_expert_shards_fail_cleanly(capsys):
    from ernie_vl_cli import build_parser
    from serve.cli import settings_from_args

    args = build_parser().parse_args(["serve", "--expert-shards", "0"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.replicas == 1
    assert args.func(args) == 2
    assert "expert_shards must be a positive integer (1 = no expert sharding), got 0" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--expert-shards", "2", "--expert-placement", "modality-aware",
                                      "--shard-num-cpus", "0.5", "--num-gpus", "1"])
    s = settings_from_args(args)
    assert (s.expert_shards, s.expert_placement, s.shard_num_cpus, s.num_gpus) == (2, "modality-aware", 0.5, 1.0)
    assert s.reuse and not settings_from_args(build_parser().parse_args(["serve", "--no-reuse"])).reuse
    from ernie_vl.demo_model import demo_model_path

    plain = settings_from_args(build_parser().parse_args(["serve"]))  # no --model: the demo checkpoint
    assert (plain.model_name(), plain.model_path()) == ("ernie-vl-demo", demo_model_path())


def test_gang_steps_give_sampling_jobs_their_own_lane_and_balance_greedy_ones():
    from ernie_vl.generation import GenerationSettings
    from serve.sharded import plan_lanes

    class Job:
        def __init__(self, name, prompt, budget, sample=False):
            self.name, self.prompt_tokens = name, prompt
            self.settings = GenerationSettings(budget, do_sample=sample, seed=7 if sample else 0)

    image, text, short = Job("image", 300, 8), Job("text", 20, 8), Job("short", 10, 4)
    s1, s2, s3 = (Job(f"s{i}", 10, 8, sample=True) for i in (1, 2, 3))
    names = lambda lanes: [[j.name for j in lane] for lane in lanes]  # noqa: E731
    assert names(plan_lanes([text, image, short], 2)[0]) == [["image"], ["text", "short"]]
    lanes, later = plan_lanes([text, s1, image, s2, s3], 3)
    assert names(lanes) == [["image", "text"], ["s1"], ["s2"]] and names([later]) == [["s3"]]
    lanes, later = plan_lanes([s1, s2, s3], 2)
    assert names(lanes) == [["s1"], ["s2"]] and names([later]) == [["s3"]]
    lanes, later = plan_lanes([short], 4)
    assert names(lanes) == [["short"], [], [], []] and later == []
    # greedy jobs with penalties or log-probabilities run under their own settings: a lane each, like sampling
    pen, lp = Job("pen", 10, 8), Job("lp", 10, 8)
    pen.settings, lp.settings = pen.settings.replace(presence_penalty=1.0), lp.settings.replace(logprobs=2)
    lanes, later = plan_lanes([text, pen, lp, short], 3)
    assert names(lanes) == [["text", "short"], ["pen"], ["lp"]] and later == []


# ----------------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("body, where, text", [
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "x": 1}]}]},
     "messages[0].content[0]", "unknown content part type 'input_audio'"),
    ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "messages[0].content[0]", "no 'type'"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "unsupported role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or a list"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}, "max_tokens", "integer"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": True}, "temperature", "number"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3.0}, "temperature", "less than"),
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x"}]}]},
     "messages[0].content[0].image_url", "JSON object"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]},
     "messages[0].content[0].video_url.url", "required"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n", "greater than or equal to 1"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs", "needs logprobs=true"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 21, "logprobs": True}, "top_logprobs",
     "less than or equal to 20"),
    ({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 2.5}, "presence_penalty", "less than"),
    ({"messages": [{"role": "user", "content": "hi"}], "repetition_penalty": 0}, "repetition_penalty", "greater"),
    ({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"enable_thinking": "yes"}},
     "chat_template_kwargs.enable_thinking", "true or false"),
    ({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"add_generation_prompt": False}},
     "chat_template_kwargs", "add_generation_prompt cannot be set"),
    ({"messages": [{"role": "user", "content": "hi", "reasoning": "x"}]}, "messages[0]", "only assistant"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": ["a"] * 5}, "stop", "at most 4"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools", "not supported"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": 1}}, "logit_bias", "not supported"),
])
def test_request_validation_names_the_field(body, where, text):
    from serve.schemas import parse_request

    err = raises(400, parse_request, body)
    assert err.param == where and err.message.startswith(where) and text in err.message, err.message


def test_chat_template_kwargs_cannot_reach_the_processors_own_arguments():
    import inspect

    from ernie_vl.chat import render
    from ernie_vl.processor import Processor
    from serve.schemas import RESERVED_TEMPLATE_VARIABLES, parse_request

    own = {*inspect.signature(Processor.prepare).parameters, *inspect.signature(render).parameters} - {
        "template_kwargs"}
    assert own <= RESERVED_TEMPLATE_VARIABLES, own - RESERVED_TEMPLATE_VARIABLES
    for key in sorted(own):
        raises(400, parse_request, {"messages": [{"role": "user", "content": "hi"}],
                                    "chat_template_kwargs": {key: 1}}, contains="cannot be set by a request")
    req = parse_request({"messages": [{"role": "user", "content": "hi"}],
                         "chat_template_kwargs": {"enable_thinking": True, "custom_flag": 1}})
    assert req.thinking() and req.template_kwargs() == {"enable_thinking": True, "custom_flag": 1}


def test_request_accepts_the_openai_subset_and_ignores_unknown_fields():
    from serve.schemas import parse_request

    req = parse_request({
        "model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                   {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                {"type": "image_url", "image_url": {"url": "x"}}]}],
        "max_completion_tokens": 5, "temperature": 0, "top_p": 0.9, "seed": 3, "stop": "\n", "n": 1,
        "stream": True, "stream_options": {"include_usage": True}, "user": "someone", "frequency_penalty": 0,
    })
    assert req.requested_max_tokens() == 5 and req.stop_list() == ["\n"] and req.temperature == 0.0
    raises(400, parse_request, [1, 2], contains="JSON object")


def test_generation_settings_follow_the_request_then_the_checkpoint_defaults():
    from ernie_vl.generation import GenerationSettings
    from serve.prepare import request_settings
    from serve.schemas import parse_request

    s = ServeSettings(default_max_tokens=16, max_tokens_limit=64, max_prompt_tokens=100)
    greedy = GenerationSettings(eos_token_id=(2,), pad_token_id=1)
    sampling = greedy.replace(do_sample=True, temperature=0.7, top_p=0.8, top_k=20)

    def params(extra, defaults=greedy, prompt=10, context=1000):
        return request_settings(parse_request({"messages": [{"role": "user", "content": "hi"}], **extra}), s, defaults,
                          prompt, context)

    assert params({}) == params({"temperature": 0}) == params({"temperature": 0, "seed": 3})
    assert not params({}).do_sample and params({}).max_new_tokens == 16
    assert (params({}).eos_token_id, params({}, sampling).pad_token_id) == ((2,), 1)  # the checkpoint's ids kept
    p = params({}, sampling)
    assert (p.do_sample, p.temperature, p.top_p, p.top_k) == (True, 0.7, 0.8, 20)
    p = params({"temperature": 1.2, "top_p": 0.5, "seed": 9, "max_tokens": 30}, sampling)
    assert (p.do_sample, p.temperature, p.top_p, p.top_k, p.seed, p.max_new_tokens) == (True, 1.2, 0.5, 20, 9, 30)
    assert not params({"temperature": 0}, sampling).do_sample
    assert params({}, prompt=95, context=100).max_new_tokens == 5  # the default budget shrinks to the context left
    raises(400, params, {"max_tokens": 65}, contains="limit of 64")
    raises(400, params, {}, prompt=101, contains="the limit is 100")
    raises(400, params, {"max_tokens": 20}, prompt=90, context=100, contains="context of 100 tokens")
    p = params({"presence_penalty": 0.5, "frequency_penalty": -1, "repetition_penalty": 1.2, "logprobs": True,
                "top_logprobs": 3})
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty, p.logprobs) == (0.5, -1.0, 1.2, 3)
    assert params({"logprobs": True}).logprobs == 0 and params({}).logprobs is None and not params({}).penalized
    raises(400, params, {"n": 40}, contains="limit of 32 choices")
    # no operator limit: anything the context holds after the prompt (as vLLM), the same error beyond it
    s = ServeSettings(default_max_tokens=16, max_prompt_tokens=100)
    assert params({"max_tokens": 49152}, context=131072).max_new_tokens == 49152
    assert params({"max_tokens": 990}, prompt=10, context=1000).max_new_tokens == 990
    raises(400, params, {"max_tokens": 991}, prompt=10, context=1000, contains="context of 1000 tokens")


def test_choices_of_a_request_draw_independent_samples_from_its_seed():
    from ernie_vl.generation import GenerationSettings
    from serve.prepare import choice_settings

    greedy = GenerationSettings(max_new_tokens=4)
    assert choice_settings(greedy, 3) == [greedy] * 3
    sampling = greedy.replace(do_sample=True, seed=-5)
    assert [s.seed for s in choice_settings(sampling, 3)] == [-5, (1 << 64) - 4, (1 << 64) - 3]


def test_image_tokens_are_estimated_from_headers_before_decoding(tiny_dir):
    import ernie_vl
    from serve.media import MediaInfo
    from serve.prepare import check_estimate, estimate_image_tokens

    proc = ernie_vl.Processor.from_pretrained(tiny_dir)
    small, big = MediaInfo("image", 1, 64, 48), MediaInfo("image", 1, 4000, 3000)
    n_small = estimate_image_tokens(proc, [small])
    out = proc.apply_chat_template([{"role": "user", "content": [{"type": "image", "image": png_bytes()}]}],
                                   add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    assert n_small == int(out["image_grid_thw"].prod()) // 4  # exactly what the processor will produce
    assert estimate_image_tokens(proc, [small, big]) > 5000
    raises(400, check_estimate, estimate_image_tokens(proc, [big]), ServeSettings(max_prompt_tokens=4096),
           contains="the images alone need about")


def test_serve_config_yaml_is_a_valid_serve_config_for_build_app():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from serve.app import DEPLOYMENT_NAME, build_app

    path = os.path.join(os.path.dirname(__file__), "..", "serve", "config.yaml")
    cfg = ServeDeploySchema.model_validate(yaml.safe_load(open(path)))
    assert cfg.http_options.host == "127.0.0.1"
    [app] = cfg.applications
    assert app.import_path == "serve.app:build_app"
    [dep] = app.deployments
    assert dep.name == DEPLOYMENT_NAME and dep.autoscaling_config["max_replicas"] >= 1
    assert dep.max_queued_requests > 0 and dep.max_ongoing_requests > 0
    ServeSettings.from_dict(app.args)  # every arg is a settings field
    build_app(app.args)


# ----------------------------------------------------------------------------------------------- security


@pytest.fixture()
def roots(tmp_path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "cat.png").write_bytes(png_bytes())
    outside = tmp_path / "secret.txt"
    outside.write_text("TOP-SECRET-CONTENT")
    (root / "escape.png").symlink_to(outside)
    (root / "inner.png").symlink_to(root / "sub" / "cat.png")
    return root, outside


def test_local_paths_are_confined_to_media_roots(roots):
    from serve.security import read_local_file, resolve_local_file

    root, outside = roots
    r = [str(root)]
    assert resolve_local_file(str(root / "sub" / "cat.png"), r, "p") == str(root / "sub" / "cat.png")
    assert resolve_local_file("sub/cat.png", r, "p") == str(root / "sub" / "cat.png")  # relative to the root
    assert resolve_local_file(f"file://{root}/inner.png", r, "p") == str(root / "sub" / "cat.png")  # link inside
    msgs = {raises(403, resolve_local_file, ref, r, "p").message for ref in [
        str(outside), f"{root}/sub/../../secret.txt", "../secret.txt", str(root / "escape.png"),
        f"file://{outside}", "/etc/passwd", "/no/such/file/anywhere.png",
    ]}
    assert msgs == {"p: the path is outside the server's allowed media roots"}  # no existence oracle
    raises(403, resolve_local_file, f"file://otherhost{root}/sub/cat.png", r, "p", contains="host")
    raises(403, resolve_local_file, str(root / "sub" / "cat.png"), [], "p", contains="disabled")
    raises(400, resolve_local_file, str(root / "sub" / "missing.png"), r, "p", contains="no such file")
    raises(413, read_local_file, str(root / "sub" / "cat.png"), 10, "p")


def test_remote_urls_need_the_allow_list():
    from serve.security import check_remote_url

    allow = ["https://img.example.com/pub/"]
    assert check_remote_url("https://img.example.com/pub/a.png", allow, "p")
    raises(403, check_remote_url, "https://img.example.com/pub/a.png", [], "p", contains="disabled")
    for url in ["https://img.example.com.evil.net/pub/a.png", "https://img.example.com@evil.net/pub/a.png",
                "https://img.example.com/pub/../private/a.png", "https://img.example.com/pub/%2e%2e/x",
                "https://img.example.com/private/a.png", "http://169.254.169.254/latest/meta-data/"]:
        raises(403, check_remote_url, url, allow, "p")


def test_api_key_check():
    from serve.security import check_api_key

    digest = hash_api_key("sk-good")
    check_api_key(None, None)
    check_api_key("Bearer sk-good", digest)
    for header in [None, "sk-good", "Bearer ", "Basic sk-good", "Bearer sk-bad"]:
        raises(401, check_api_key, header, digest)


# ----------------------------------------------------------------------------------------------- media


def test_media_limits_are_checked_before_decoding():
    from serve.media import load_media

    s = ServeSettings(max_image_pixels=100 * 100, max_media_bytes=200_000, max_video_frames=20,
                      max_video_pixels=64 * 48)
    data, info = load_media(data_url(png_bytes()), "image", "p", s)
    assert info.width == 64 and info.height == 48 and data == png_bytes()
    raises(400, load_media, data_url(png_bytes(200, 200)), "image", "p", s, contains="40000 pixels")
    raises(400, load_media, data_url(png_bytes(20000, 20000, mode="1")), "image", "p", s, contains="too many pixels")
    raises(413, load_media, data_url(os.urandom(300_000)), "image", "p", s)
    raises(400, load_media, "data:image/png;base64,@@@", "image", "p", s, contains="base64")
    raises(400, load_media, data_url(b"hello"), "image", "p", s, contains="could not be identified")
    raises(400, load_media, data_url(png_bytes(), "text/html"), "image", "p", s, contains="text/html")
    raises(400, load_media, "ftp://host/a.png", "image", "p", s, contains="scheme 'ftp'")
    _, vinfo = load_media(data_url(mp4_bytes(16), "video/mp4"), "video", "p", s)
    assert (vinfo.frames, vinfo.width, vinfo.height) == (16, 64, 48)
    raises(400, load_media, data_url(mp4_bytes(24), "video/mp4"), "video", "p", s, contains="24 frames")
    raises(400, load_media, data_url(mp4_bytes(4, 128, 96), "video/mp4"), "video", "p", s, contains="128x96")
    raises(400, load_media, data_url(png_bytes(), "video/mp4"), "video", "p", s)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/ok/cat.png":
            body = png_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/ok/redirect.png":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/secret")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


def test_allowed_urls_are_fetched_without_following_redirects():
    from serve.media import load_media

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        s = ServeSettings(allowed_url_prefixes=[f"{base}/ok/"], url_timeout_s=5)
        data, info = load_media(f"{base}/ok/cat.png", "image", "p", s)
        assert info.width == 64
        raises(400, load_media, f"{base}/ok/redirect.png", "image", "p", s, contains="redirects are not followed")
        raises(403, load_media, f"{base}/other/cat.png", "image", "p", s, contains="allow-list")
        small = ServeSettings(allowed_url_prefixes=[f"{base}/ok/"], max_media_bytes=10)
        raises(413, load_media, f"{base}/ok/cat.png", "image", "p", small)
    finally:
        server.shutdown()


# ----------------------------------------------------------------------------------------------- text stream


def test_text_stream_holds_back_partial_stops_and_split_characters():
    from serve.textstream import TextStream

    pieces = {1: "Hello", 2: " wor", 3: "ld", 4: "\n\nEND", 5: " more"}
    ts = TextStream(lambda ids: "".join(pieces[i] for i in ids), stop=["\n\nEND"])
    out = [ts.push(t) for t in (1, 2, 3, 4, 5)]
    assert out[:4] == [("Hello", False), (" wor", False), ("ld", False), ("", True)]
    assert ts.text == "Hello world" and ts.stopped

    ts = TextStream(lambda ids: "".join(pieces[i] for i in ids), stop=["ld\n"])
    assert [ts.push(t)[0] for t in (1, 2, 3)] == ["Hello", " wor", ""]  # "ld" may start the stop string
    assert ts.push(5) == ("ld more", False)

    raw = "é".encode() + b"!"  # a two-byte character split over two tokens
    toks = {1: raw[:1], 2: raw[1:2], 3: raw[2:]}
    ts = TextStream(lambda ids: b"".join(toks[i] for i in ids).decode("utf-8", errors="replace"))
    assert [ts.push(t)[0] for t in (1, 2, 3)] == ["", "é", "!"]
    assert ts.finish() == "" and ts.text == "é!"


def test_streamed_deltas_join_to_the_batch_decode_with_the_real_tokenizer(tiny_dir):
    """Byte-fallback runs can rewrite already-decoded text; the stream must wait for them (random sequences)."""
    import random

    from ernie_vl.tokenizer import Tokenizer
    from serve.textstream import TextStream, byte_fallback_ids

    tok = Tokenizer.from_pretrained(tiny_dir)
    vocab = tok.backend.get_vocab()
    byte_ids = sorted(byte_fallback_ids(vocab))
    assert len(byte_ids) == 256
    rng = random.Random(0)
    ids = sorted(vocab.values())
    for _ in range(200):
        seq = [rng.choice(byte_ids) if rng.random() < 0.5 else rng.choice(ids) for _ in range(rng.randint(1, 30))]
        ts = TextStream(lambda t: tok.decode(t, skip_special_tokens=True), byte_ids=byte_ids)
        sent = "".join(ts.push(t)[0] for t in seq)
        assert tok.decode(seq, skip_special_tokens=True).startswith(sent)
        assert sent + ts.finish() == tok.decode(seq, skip_special_tokens=True)
    # a skipped special token between byte tokens does not end their run: "\x7f" must not go out before the bytes
    # after the special token turn it into U+FFFD (a sequence the tiny model generates)
    special = next(i for i in range(tok.backend.get_vocab_size(with_added_tokens=True))
                   if tok.backend.id_to_token(i) is not None and tok.decode([i], skip_special_tokens=True) == ""
                   and i not in byte_ids)
    b = {n: vocab[f"<0x{n:02X}>"] for n in (0x7F, 0x03, 0xB6)}
    seq = [b[0x7F], special, b[0x03], b[0xB6], vocab["▁show"]]
    ts = TextStream(lambda t: tok.decode(t, skip_special_tokens=True), byte_ids=byte_ids)
    sent = "".join(ts.push(t)[0] for t in seq)
    assert sent + ts.finish() == tok.decode(seq, skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------- batching


class _FakeJob:
    def __init__(self, cost):
        self.cost, self.cancelled, self.enqueued_at = cost, False, 0.0


def _fits(limit_rows, limit_tokens):
    def fits(taken, job):  # the decoder's rule, for an idle decoder: any first job, then slots and padded work
        if not taken:
            return True
        longest = max([j.cost for j in taken] + [job.cost])
        return len(taken) < limit_rows and longest * (len(taken) + 1) <= limit_tokens
    return fits


def test_job_queue_batches_by_rows_tokens_and_wait_and_is_bounded():
    from serve.batching import JobQueue, QueueFull

    q = JobQueue(max_queued=7, batch_wait_timeout_s=0.05)
    fits = _fits(3, 100)
    jobs = [_FakeJob(c) for c in (10, 10, 10, 10, 40, 40, 30)]
    for j in jobs:
        q.submit(j)
    with pytest.raises(QueueFull, match="7 requests are already waiting"):
        q.submit(_FakeJob(1))
    jobs[3].cancelled = True  # its client went away: dropped, never taken
    got = []
    t0 = time.monotonic()
    while len(q):
        got.append([j.cost for j in q.take(fits, block=True)])
    assert got == [[10, 10, 10], [40, 40], [30]]  # row bound, cancelled dropped, token bound (40 x 3 > 100)
    assert time.monotonic() - t0 < 0.2  # full batches go at once; the partial last one waits out its 50 ms budget

    assert q.take(fits, block=True, timeout=0.05) == []  # idle: gives up after the timeout
    q.submit(_FakeJob(5))
    t0 = time.monotonic()
    assert [j.cost for j in q.take(fits, block=True)] == [5]  # alone: after the wait budget
    assert 0.03 <= time.monotonic() - t0 < 1.0
    q.submit(_FakeJob(6))
    assert q.take(lambda taken, job: False, block=False) == [] and len(q) == 1  # the head waits for room


def test_job_queue_wakes_the_decode_thread_on_submit():
    from serve.batching import JobQueue

    q = JobQueue(batch_wait_timeout_s=0.0)
    out = []
    t = threading.Thread(target=lambda: out.append(q.take(_fits(8, 10**6), block=True, timeout=5)))
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    q.submit(_FakeJob(1))
    t.join(5)
    assert [j.cost for j in out[0]] == [1] and time.monotonic() - t0 < 1


def test_runtime_frees_the_slot_of_a_request_whose_client_went_away(tiny_dir):
    """A cancelled job (client disconnected, or its time ran out) stops generating at the next token."""
    import asyncio

    from serve.runtime import ModelRuntime
    from serve.schemas import parse_request

    rt = ModelRuntime(ServeSettings(model=str(tiny_dir), max_tokens_limit=1000, torch_threads=1))
    try:
        async def main():
            req = parse_request({"messages": [{"role": "user", "content": "Talk for a long time."}],
                                 "max_tokens": 1000, "stream": True})
            job = await rt.prepare(req)
            rt.submit(job)
            first = await asyncio.wait_for(job.events.get(), 30)
            job.cancelled = True
            deadline = time.monotonic() + 10
            while rt.decoder.active and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return first, len(job.choices[0].stream.tokens)

        first, n_tokens = asyncio.run(main())
        assert first[0] == "delta" or first[0] == "done"
        assert not rt.decoder.active and rt.decoder.cache is None and n_tokens < 1000
        assert rt.healthy()
    finally:
        rt.close()
