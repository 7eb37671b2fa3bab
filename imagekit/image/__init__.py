"""Stage 3: assemble a raw disk image from staged trees, rootless and without loop devices.

layout.py decides where each filesystem goes (hd0: the whole disk; hd00: MBR partitions),
partition.py writes the MBR with pyparted on the plain file, filesystem.py makes and populates each
filesystem with the host's mkfs (`mke2fs -d`, `mkfs.xfs -p`, `mkfs.btrfs --rootdir`), writing ext*
straight at its offset in the image and copying the others in sparsely (sparse.py).
"""
