"""Starts moto's server on 127.0.0.1:PORT with EBS snapshots that report the block
size they really store (524288; moto itself reports 512).

Usage: python moto_server.py PORT
"""
import sys

from moto.ebs import models

_init = models.EBSSnapshot.__init__


def _init_524288(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.block_size = 524288


models.EBSSnapshot.__init__ = _init_524288

from moto.server import main  # noqa: E402

main(["-H", "127.0.0.1", "-p", sys.argv[1]])
