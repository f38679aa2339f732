"""Which processes go first: the read models' path, never a gateway or a process of mixed work."""

from services.priority import DEFERRABLE_NICENESS, READ_MODELS_NICENESS, niceness_for


def test_read_models_go_first_and_deferrable_work_last() -> None:
    assert niceness_for(["relay", "projector"]) == READ_MODELS_NICENESS < 0
    assert niceness_for(["projector"]) == READ_MODELS_NICENESS
    assert niceness_for(["sweeper", "mailer", "payments"]) == DEFERRABLE_NICENESS > 0


def test_a_gateway_or_a_mix_keeps_the_default() -> None:
    assert niceness_for(["gateway"]) == 0
    assert niceness_for(["gateway", "relay", "projector", "mailer"]) == 0
    assert niceness_for(["relay", "mailer"]) == 0
