"""PV-GRUB's rules, from PV-GRUB's own code: one model that lint and the boot test can share.

PV-GRUB is GRUB 0.97 plus Xen's patches (xen-project/xen `stubdom/grub.patches`) on Mini-OS.
  fetch   Debian's real GRUB 0.97 (`grub-legacy` 0.97-80): its `grub` shell, apt-get downloaded into
          imagekit's cache and unpacked there (never installed: it conflicts with grub-pc/grub-efi-amd64)
  shell   that shell run batch, read-only and offline on an image file: device names as the AKI sees
          them, GRUB's errors parsed, files read (text with `cat`, bytes with `dump`)
  menu    menu.lst as stage2 reads it (default, fallback, which lines an entry keeps) and each entry run
          through the shell, with kernel/initrd loaded as PV-GRUB's Mini-OS loader does: read whole
"""
