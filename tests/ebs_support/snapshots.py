"""Uploads a disk image to an EBS endpoint (moto) as a snapshot, with boto3:
StartSnapshot, PutSnapshotBlock for every non-zero 512 KiB block, CompleteSnapshot.
Prints the snapshot id.

Usage: python snapshots.py ENDPOINT IMAGE [--pending]
  --pending   leave the snapshot pending (do not complete it)
Credentials and region come from the AWS_* environment variables.
"""
import base64
import hashlib
import os
import sys

import boto3

BLOCK = 524288


def main():
    endpoint, image = sys.argv[1], sys.argv[2]
    pending = "--pending" in sys.argv[3:]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    ebs = boto3.client("ebs", endpoint_url=endpoint, region_name=region)
    size = os.path.getsize(image)
    gib = max(1, -(-size // (1 << 30)))
    snap = ebs.start_snapshot(VolumeSize=gib, Description="failback test")["SnapshotId"]
    zero = bytes(BLOCK)
    with open(image, "rb") as f:
        index = 0
        while True:
            data = f.read(BLOCK)
            if not data:
                break
            data = data.ljust(BLOCK, b"\0")
            if data != zero:
                ebs.put_snapshot_block(
                    SnapshotId=snap,
                    BlockIndex=index,
                    BlockData=data,
                    DataLength=BLOCK,
                    Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                    ChecksumAlgorithm="SHA256",
                )
            index += 1
    if not pending:
        ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=0)
    print(snap)


if __name__ == "__main__":
    main()
