from ponder.actors import wire
from ponder.actors.engine import GeneratedStep, ScoreRequest, ScoreResult, StepRequest


def test_requests_and_results_round_trip_with_every_field():
    reqs = [StepRequest("Compute (1 + 2).", ["1 + 2 = 3"], n=3, temperature=0.5, top_p=0.9, to_end=True,
                        seed=7, affinity="t:1"), StepRequest("Compute (2 * 2).", [])]
    assert wire.unpack_call("policy", wire.pack_call("policy", reqs, "c"))[0] == reqs
    res = [[[GeneratedStep("a", 3, False, 10, 4), GeneratedStep("b", 2, True)]], [[GeneratedStep("c", 1, True)]] * 2]
    assert wire.unpack_reply("policy", wire.pack_reply("policy", res, 0))[0] == res
    sreqs = [ScoreRequest("p", ["s1", "s2"], "t:1"), ScoreRequest("q", [])]
    assert wire.unpack_call("reward", wire.pack_call("reward", sreqs, "c"))[0] == sreqs
    sres = [ScoreResult([0.5, 0.25], 12, 8), ScoreResult([], 0)]
    assert wire.unpack_reply("reward", wire.pack_reply("reward", sres, 0))[0] == sres


def test_calls_and_replies_carry_the_caller_and_the_others_load():
    reqs = [StepRequest("Compute (1 + 2).", [], n=2, seed=1, affinity="t:1")]
    assert wire.unpack_call("policy", wire.pack_call("policy", reqs, "pool-a")) == (reqs, "pool-a")
    res = [[[GeneratedStep("a", 3, True)]]]
    assert wire.unpack_reply("policy", wire.pack_reply("policy", res, 17)) == (res, 17)
    sres = [ScoreResult([0.5], 4, 0)]
    assert wire.unpack_reply("reward", wire.pack_reply("reward", sres, 0)) == (sres, 0)
