"""`free_port` never hands out the same port twice in one process (each stack's processes get
their own: a Temporal frontend and UI port once collided)."""

from local_stack.ports import free_port


def test_free_ports_are_distinct():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
