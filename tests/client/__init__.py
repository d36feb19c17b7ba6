"""Tests of lockgate.client and the remote commands, against a real gateway."""
