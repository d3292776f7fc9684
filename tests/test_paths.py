"""The pure rules of NAT traversal, without sockets: how two peers choose their path from
what the coordinator observed (peer/remote_peer.h), and the punch timing
(coord/path_broker.h)."""

from pcomm import _pcomm

REACHABLE, RANDOMIZING = 1, 2


def member(peer, local, observed, nat=0):
    return (peer, local, observed, nat)


PUBLIC = member("p1", "198.18.0.1:5000", "198.18.0.1:5000", REACHABLE)
HOME_A = member("h1", "198.19.1.2:6000", "198.18.0.101:6000")
HOME_B = member("h2", "198.19.2.2:7000", "198.18.0.102:7000")
SYMMETRIC = member("s1", "198.19.3.2:8000", "198.18.0.103:41234", RANDOMIZING)


def test_the_unreachable_side_dials_the_reachable_one():
    # Both compute the same answer from the same facts: exactly one of them drives.
    home = _pcomm._choose_path(HOME_A, PUBLIC)
    public = _pcomm._choose_path(PUBLIC, HOME_A)
    assert home == {"self_drives": True, "direct": ["198.18.0.1:5000"], "punchable": True}
    assert public["self_drives"] is False


def test_two_reachable_peers_lower_id_dials():
    a = member("a", "198.18.0.1:1", "198.18.0.1:1", REACHABLE)
    b = member("b", "198.18.0.2:2", "198.18.0.2:2", REACHABLE)
    assert _pcomm._choose_path(a, b) == {"self_drives": True, "direct": ["198.18.0.2:2"], "punchable": True}
    assert _pcomm._choose_path(b, a)["self_drives"] is False


def test_two_homes_punch_and_the_lower_id_asks():
    assert _pcomm._choose_path(HOME_A, HOME_B) == {"self_drives": True, "direct": [], "punchable": True}
    assert _pcomm._choose_path(HOME_B, HOME_A) == {"self_drives": False, "direct": [], "punchable": True}


def test_a_randomizing_nat_on_either_side_means_relay():
    assert _pcomm._choose_path(HOME_A, SYMMETRIC)["punchable"] is False
    assert _pcomm._choose_path(SYMMETRIC, HOME_A)["punchable"] is False
    # ...but a reachable peer is still dialled directly, even from behind such a NAT.
    assert _pcomm._choose_path(SYMMETRIC, PUBLIC)["direct"] == ["198.18.0.1:5000"]


def test_behind_one_public_address_the_local_address_is_tried():
    a = member("a", "198.19.1.2:6000", "198.18.0.101:6000")
    b = member("b", "198.19.1.3:6001", "198.18.0.101:6001")
    assert _pcomm._choose_path(a, b) == {"self_drives": True, "direct": ["198.19.1.3:6001"], "punchable": True}


def test_punch_delays_make_both_dial_at_once():
    # Sent at t=0, received at rtt/2; each waits so that both dial at the same instant,
    # a margin after the slower side has its message.
    a, b = _pcomm._punch_delays(0.100, 0.020)
    assert (a, b) == (15, 55)
    assert abs((100 / 2 + a) - (20 / 2 + b)) <= 1
    assert _pcomm._punch_delays(0.0, 0.0) == (15, 15)
