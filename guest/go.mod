module rootfs-pipeline/guest

go 1.22
