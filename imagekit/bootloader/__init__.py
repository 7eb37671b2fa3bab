"""Boot loader configuration: GRUB-legacy menu.lst as Amazon's PV-GRUB reads it."""
