"""Where each method loses (apr_mini.attribution), on hand-made trees of the problem 36 from [3, 7, 9]."""

from apr_mini import attribution as at
from apr_mini.engine import CONTEXT_FULL

ROOT = "Moving to Node #0\nCurrent State: 36:[3, 7, 9], Operations: []\n"
# child 0 cannot reach 36 from [9, 10]; child 1 can (9*4=36)
CHILD_STATES = {"0,0": ("36:[9, 10]", "3+7=10"), "0,1": ("36:[9, 4]", "7-3=4")}
STEP = "Exploring Operation: 9*4=36, Resulting Numbers: [36]\n36,36 equal: Goal Reached\n"
# a thread's answer is the path it writes out after reaching the goal
SOLVED_TAIL = STEP + "Moving to Node #0,1\nCurrent State: 36:[9, 4], Operations: ['7-3=4']\n" + STEP
MISSED_TAIL = "Exploring Operation: 9+4=13, Resulting Numbers: [13]\n13,36 unequal: No Solution\nNo solution found.\n"
ROOT_ANSWER = ("36,36 equal: Goal Reached\n" + ROOT + "Exploring Operation: 7-3=4, Resulting Numbers: [9, 4]\n"
               "Generated Node #0,1: 36:[9, 4] Operation: 7-3=4\nMoving to Node #0,1\n"
               "Current State: 36:[9, 4], Operations: ['7-3=4']\n" + STEP)


def child(node: str, tail: str = MISSED_TAIL, failure: str | None = None) -> dict:
    state, op = CHILD_STATES[node]
    prompt = f"Moving to Node #{node}\nCurrent State: {state}, Operations: ['{op}']\n"
    return {"main_calls": [prompt + tail], "sub_calls": [], "failure": failure}


def record(children=None, final="No solution found.\n", verified=False, failure=None) -> dict:
    calls = [ROOT + "<Calling Sub Searches>\n", ROOT + final] if children else [ROOT + final]
    tree = {"main_calls": calls, "sub_calls": [children] if children else [], "failure": failure}
    return {"tree": tree, "verified": verified}


def test_each_cause_is_the_first_broken_link():
    assert at.loss_cause(record([child("0,1", SOLVED_TAIL)], ROOT_ANSWER, verified=True)) == at.SOLVED
    assert at.loss_cause(record([child("0,0")])) == at.NO_SOLVABLE_CHILD
    assert at.loss_cause(record([child("0,0"), child("0,1")])) == at.CHILD_MISSED
    assert at.loss_cause(record([child("0,0"), child("0,1", SOLVED_TAIL)])) == at.LOST_AT_JOIN
    assert at.loss_cause(record([child("0,1", "Exploring", failure=CONTEXT_FULL)])) == at.OUT_OF_CONTEXT
    assert at.loss_cause(record(final="Exploring", failure=CONTEXT_FULL)) == at.OUT_OF_CONTEXT
    assert at.loss_cause(record()) == at.NEVER_ANSWERED
    wrong = ROOT_ANSWER.replace("9*4=36", "9*4=35")
    assert at.loss_cause(record(final=wrong)) == at.WRONG_ANSWER


def test_a_solution_found_below_a_child_counts_as_found():
    deep = child("0,1")
    deep["sub_calls"] = [[child("0,1", SOLVED_TAIL)]]
    assert at.loss_cause(record([deep])) == at.LOST_AT_JOIN


def test_a_child_that_ran_out_of_room_is_not_a_missed_solution_when_another_found_it():
    found, full = child("0,1", SOLVED_TAIL), child("0,1", "Exploring", failure=CONTEXT_FULL)
    assert at.loss_cause(record([full, found])) == at.LOST_AT_JOIN


def test_a_malformed_child_prompt_holds_no_solvable_state():
    broken = {"main_calls": ["Moving to Node #0,9\nnot a state\n"], "sub_calls": [], "failure": None}
    assert at.loss_cause(record([broken])) == at.NO_SOLVABLE_CHILD


def test_the_table_counts_every_record_once_and_the_spawning_roots():
    records = [record([child("0,0")]), record([child("0,0"), child("0,1")]), record(),
               record([child("0,1", SOLVED_TAIL)], ROOT_ANSWER, verified=True)]
    table = at.loss_attribution(records)
    assert table["n"] == 4 and table["solved"] == 1
    assert sum(table[cause] for cause in at.CAUSES) == 3
    assert table["root_spawns"] == 0.75
    assert list(table)[2:2 + len(at.CAUSES)] == list(at.CAUSES)
