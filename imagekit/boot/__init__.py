"""Boot-test an image the way EC2 would boot it, under QEMU (or Xen where there is a dom0).

The pipeline of `imagekit boot`, one module a step:
  options  BootOptions, what every loader is asked to do
  target   what the image is (format, hd0/hd00 layout, its build manifest)
  overlay  a qcow2 overlay backed by the image: the image itself is never written
  guest    one libguestfs session on the overlay: find the filesystems, read menu.lst
  probe    what the overlay gets: a sentinel probe, console=ttyS0 on the kernel lines
  pv       a PV boot's preparation (QEMU's and Xen's): the disk PV-GRUB reads, the edits, GRUB 0.97's plan
  prepared what a preparation hands the boot (`Prepared`: the disk, the edits, the files the loader reads)
  mounts   the probe's report of mounts and of the services ordered after them, parsed back
  attach   the instance beyond its root: instance store, data volumes (overlays), metadata service
  nocloud  a `cidata` seed disk for cloud-init images
  pvgrub   real GRUB code (GRUB 2's legacycfg) reading the image's menu.lst as PV-GRUB would
  direct   the entry PV-GRUB would pick, its kernel and initrd given straight to QEMU
  pvgrub097  GRUB 0.97 itself runs menu.lst (imagekit/pvgrub), Xen's loader rules judge the kernel
             (kernel/xenload.py), QEMU boots the ELF Xen would start (PVH entry)
  qemu     the QEMU process: owned, bounded, always reaped; the serial log streamed and saved
  console  what the serial log says: booted, or which failure and where
  xen      xl config and pvgrub2 image for a real Xen dom0
HVM images (by --firmware, the manifest's layout, or the disk) take a path of their own:
  (image/disklabel.py: the first sectors: GRUB in the MBR, GPT, an ESP: which firmware, without a manifest)
  firmware   SeaBIOS or OVMF (pflash CODE + a per-boot copy of VARS), from --firmware/manifest/disk
  hvm        the overlay: root found on any partition or LV, the probe, console=ttyS0 in grub.cfg
  hvm_boot   one overlay, one boot per firmware (NVMe disk by default), one report with each result
  results  the console's verdict and the preparation made into the report; the serial log saved
  report   the result, for a person or as JSON

Start at `harness.boot_image(BootOptions(...))`; the result is a `report.BootReport`. The harness calls the
loaders (xen, hvm_boot); they import the shared types and steps above, never the harness.
"""
