import math

import pytest

from ponder.search.aggregate import aggregate, canonical, select, softmax, vote_counts
from ponder.search.types import Candidate


def cand(answer, score):
    return Candidate(steps=[f"step {answer}"], rewards=[score], score=score, answer=answer, tokens=3)


def test_aggregations():
    r = [0.9, 0.5, 0.8]
    assert aggregate(r, "last") == 0.8
    assert aggregate(r, "min") == 0.5
    assert aggregate(r, "avg") == pytest.approx(2.2 / 3)
    assert aggregate(r, "prod") == pytest.approx(0.36)
    assert aggregate([], "min") == 0.0 and aggregate(None, "prod") == 0.0
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate(r, "max")


@pytest.mark.parametrize(
    "raw, want",
    [("12", "12"), (" 12.0 ", "12"), ("$12$.", "12"), ("$ 12.00 $", "12"), ("-3.0", "-3"), ("0.50", "0.5"),
     ("1 / 2", "0.5"), ("\\frac{1}{2}.", "0.5"), ("\\frac{1}{3}", "1/3"), ("x = 4", "x=4"), ("\\sqrt{2}", "\\sqrt{2}")],
)
def test_canonical(raw, want):
    assert canonical(raw) == want


def test_canonical_none_and_distinct_numbers():
    assert canonical(None) is None
    assert canonical("12") != canonical("12.5")


def test_majority_prm_max_and_prm_vote_disagree_as_they_should():
    cands = [cand("7", 0.3), cand("7.0", 0.3), cand("9", 0.9)]
    assert canonical(select(cands, "majority").answer) == "7"  # two votes beat one
    assert select(cands, "prm_max").answer == "9"
    assert select(cands, "prm_vote").answer == "9"  # 0.9 > 0.3 + 0.3
    cands[0].score = cands[1].score = 0.5
    assert canonical(select(cands, "prm_vote").answer) == "7"  # 1.0 > 0.9


def test_vote_winner_is_represented_by_its_best_trajectory():
    cands = [cand("7", 0.2), cand("7", 0.6), cand("9", 0.7)]
    chosen = select(cands, "majority")
    assert chosen is cands[1]


def test_none_answers_never_win_unless_alone():
    cands = [cand(None, 1.0), cand(None, 0.99), cand("3", 0.1)]
    for how in ("majority", "prm_max", "prm_vote"):
        assert select(cands, how).answer == "3"
    only_none = [cand(None, 0.2), cand(None, 0.7)]
    assert select(only_none, "prm_vote") is only_none[1]
    assert select([], "majority") is None


def test_ties_are_deterministic_first_appearance():
    a, b = cand("1", 0.5), cand("2", 0.5)
    for how in ("majority", "prm_max", "prm_vote"):
        assert select([a, b], how) is a
        assert select([b, a], how) is b
    # majority tie on count is broken by weight
    assert select([cand("1", 0.2), cand("2", 0.4)], "majority").answer == "2"


def test_unknown_selection_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown selection 'best'"):
        select([cand("1", 1.0)], "best")


def test_vote_counts_groups_canonical_forms():
    assert vote_counts([cand("4", 0), cand("4.0", 0), cand("$4$", 0), cand(None, 0), cand("5", 0)]) == {"4": 3, "5": 1}


HALVES = ["\\frac{1}{2}", "\\dfrac{1}{2}", "0.5", "1/2", "\\frac12"]


def test_votes_group_equivalent_answers_not_strings():
    assert vote_counts([cand(h, 0) for h in HALVES]) == {"0.5": 5}
    assert vote_counts([cand("52_8", 0), cand("52_{8}", 0), cand("52_9", 0)]) == {"52_8": 2, "52_9": 1}
    # five ways of writing one half outvote two (identical) thirds, and outweigh them too
    cands = [cand("1/3", 0.6), cand("1/3", 0.6)] + [cand(h, 0.3) for h in HALVES]
    assert canonical(select(cands, "majority").answer) == "0.5"
    assert canonical(select(cands, "prm_vote").answer) == "0.5"  # 1.5 > 1.2
    assert select(cands, "prm_max").answer == "1/3"


def test_softmax():
    p = softmax([0.1, 0.9, 0.5], 0.5)
    assert sum(p) == pytest.approx(1.0) and p[1] > p[2] > p[0]
    sharp = softmax([0.1, 0.9, 0.5], 0.01)
    assert sharp[1] > 0.999
    assert softmax([1000.0, 0.0], 1.0)[0] == pytest.approx(1.0)  # no overflow
    assert all(math.isclose(x, 1 / 3) for x in softmax([0.2] * 3, 0.1))


def test_lead_probability_is_the_beta_tail_of_the_two_leading_votes():
    from ponder.search.aggregate import beta_tail, lead_probability
    from ponder.search.types import Candidate

    def c(answer, score=1.0):
        return Candidate(steps=["x"], rewards=[score], score=score, answer=answer, tokens=1, terminal=True)

    assert beta_tail(5, 1) == pytest.approx(1 - 0.5**5)  # Beta(5,1): 1 - 0.5^5
    assert beta_tail(4, 2) == pytest.approx(13 / 16)
    assert beta_tail(3, 3) == pytest.approx(0.5)
    assert lead_probability([]) == 0.0
    assert lead_probability([c("1")] * 4, "majority") == pytest.approx(1 - 0.5**5)
    assert lead_probability([c("1")] * 3 + [c("2")], "majority") == pytest.approx(13 / 16)
    # prm_vote: the PRM splits the evidence (here 3:1 by weight over 4 samples, though 2:2 by count)
    weighted = [c("1", 0.9), c("1", 0.9), c("2", 0.3), c("2", 0.3)]
    assert lead_probability(weighted, "prm_vote") == pytest.approx(beta_tail(4, 2))
    assert lead_probability(weighted, "majority") == pytest.approx(0.5)
    # more samples at the same split: more sure
    assert lead_probability([c("1")] * 6 + [c("2")] * 2, "majority") > lead_probability([c("1")] * 3 + [c("2")], "majority")
