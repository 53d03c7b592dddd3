"""The judge client and its cache over real HTTP (a stdlib server on 127.0.0.1 that fails on purpose): retries with
backoff on 5xx / 429 / timeouts, no retry where asking again cannot help, an unreachable judge given up once, the API
key from the environment, and replies cached in Parquet so that a second run asks nothing."""

import pyarrow.parquet as pq
import pytest
from judge_support import ScriptedJudge, dead_url

from evals import judge_cache
from evals.judge import Judge
from evals.judge_cache import CACHE_DIR, JudgeCache, cache_key
from evals.judge_client import JudgeClient, JudgeError, JudgeSettings


def settings(url, **kw):
    kw.setdefault("backoff_s", 0.01)
    return JudgeSettings(url=url, model="judge-m", **kw)


def test_retries_5xx_and_429_with_backoff_then_answers():
    failures = [(503, {}, 0), (500, {}, 0), (429, {"Retry-After": "0"}, 0)]
    with ScriptedJudge(lambda p: f"echo {p}", failures) as judge:
        client = JudgeClient(settings(judge.url, max_retries=3))
        assert client.chat("hello", max_tokens=7) == "echo hello"
    assert len(judge.requests) == 4 and client.attempts == 4
    body = judge.requests[-1]["body"]
    assert body == {"model": "judge-m", "messages": [{"role": "user", "content": "hello"}], "temperature": 0,
                    "max_tokens": 7}
    assert {r["path"] for r in judge.requests} == {"/v1/chat/completions"}


def test_gives_up_after_max_retries_and_never_retries_a_client_error():
    with ScriptedJudge(failures=[(503, {}, 0)] * 5) as judge:
        with pytest.raises(JudgeError, match="after 3 attempt"):
            JudgeClient(settings(judge.url, max_retries=2)).chat("q", 8)
        assert len(judge.requests) == 3
    with ScriptedJudge(failures=[(400, {}, 0)]) as judge:
        client = JudgeClient(settings(judge.url + "/chat/completions", max_retries=3))  # the full endpoint works too
        with pytest.raises(JudgeError, match="HTTP 400.*scripted 400"):
            client.chat("q", 8)
        assert len(judge.requests) == 1 and client.down is None  # reachable: later prompts are still asked
        assert client.chat("q", 8) == "ok"


def test_a_slow_reply_times_out_and_is_retried():
    with ScriptedJudge(failures=[(None, {}, 3.0)]) as judge:  # the first reply comes after 3 s; the timeout is 1 s
        client = JudgeClient(settings(judge.url, timeout_s=1.0, max_retries=2))
        assert client.chat("q", 8) == "ok"
    assert len(judge.requests) == 2


def test_an_unreachable_judge_is_given_up_once():
    client = JudgeClient(settings(dead_url(), max_retries=2))
    with pytest.raises(JudgeError, match="failed after 3 attempt"):
        client.chat("q", 8)
    assert client.attempts == 3 and client.down
    with pytest.raises(JudgeError, match="unreachable"):
        client.chat("another", 8)
    assert client.attempts == 3  # no new connection attempt


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("ERNIE_VL_JUDGE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedJudge() as judge:
        JudgeClient(settings(judge.url)).chat("q", 8)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
        JudgeClient(settings(judge.url)).chat("q", 8)
        monkeypatch.setenv("MY_JUDGE_KEY", "sk-mine")
        JudgeClient(settings(judge.url, api_key_env="MY_JUDGE_KEY")).chat("q", 8)
    auth = [r["headers"].get("Authorization") for r in judge.requests]
    assert auth == [None, "Bearer sk-fallback", "Bearer sk-mine"]
    assert "sk-mine" not in repr(settings(judge.url, api_key_env="MY_JUDGE_KEY"))


def test_settings_are_checked():
    for bad in (dict(url="127.0.0.1:8000"), dict(model=""), dict(concurrency=0), dict(timeout_s=0),
                dict(max_retries=-1)):
        with pytest.raises(ValueError):
            JudgeSettings(**{"url": "http://h/v1", "model": "m", **bad})


def test_judge_asks_each_prompt_once_and_a_second_run_reads_the_cache(tmp_path):
    prompts = [f"p{i % 7}" for i in range(20)]  # 7 distinct prompts
    with ScriptedJudge(lambda p: p.upper()) as judge:
        first = Judge(settings(judge.url, concurrency=4), tmp_path)
        replies = first.ask("demo", prompts, 16)
    assert replies == {p: p.upper() for p in prompts}
    assert sorted(judge.prompts()) == sorted(set(prompts))
    assert (first.stats["demo"].asked, first.stats["demo"].cached, first.stats["demo"].failed) == (7, 0, 0)
    parts = sorted((tmp_path / CACHE_DIR).glob("part-*.parquet"))
    table = pq.read_table(parts[0])
    assert len(parts) == 1 and table.num_rows == 7 and not list((tmp_path / CACHE_DIR).glob(".tmp-*"))
    row = table.to_pylist()[0]
    assert row["key"] == cache_key("judge-m", row["prompt"]) and row["reply"] == row["prompt"].upper()
    assert row["max_tokens"] == 16 and row["benchmark"] == "demo"

    again = Judge(settings(dead_url()), tmp_path)  # the judge is gone: everything comes from the cache
    assert again.ask("demo", prompts, 16) == replies
    assert (again.stats["demo"].asked, again.stats["demo"].cached) == (0, 7) and again.client.attempts == 0
    other_model = Judge(JudgeSettings(url=dead_url(), model="another", max_retries=0), tmp_path)
    assert other_model.ask("demo", ["p1"], 16) == {"p1": None}  # the key includes the judge model
    assert other_model.stats["demo"].failed == 1 and "refused" in other_model.record("demo")["error"].lower()


def test_failed_prompts_are_not_cached_and_the_cache_appends_and_compacts(tmp_path, monkeypatch):
    with ScriptedJudge(lambda p: "r-" + p, failures=[(500, {}, 0)] * 2) as judge:
        j = Judge(settings(judge.url, concurrency=1, max_retries=1), tmp_path)
        assert j.ask("b", ["a"], 8) == {"a": None}  # 500 twice: given up, nothing cached
        assert j.ask("b", ["a", "c"], 8) == {"a": "r-a", "c": "r-c"}
    assert len(JudgeCache(tmp_path)) == 2 and j.record("b")["failed"] == 1
    cache = JudgeCache(tmp_path)
    for i in range(4):
        cache.add([{"judge_model": "m", "prompt": f"x{i}", "reply": str(i), "max_tokens": 8, "benchmark": "b"}])
    assert len(cache.parts()) == 5
    monkeypatch.setattr(judge_cache, "COMPACT_AT", 3)
    merged = JudgeCache(tmp_path)  # more than COMPACT_AT files: merged into one on open
    assert len(merged.parts()) == 1 and len(merged) == 6 and merged.get("m", "x3") == "3"
