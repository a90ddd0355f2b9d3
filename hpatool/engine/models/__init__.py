"""The model and its files: the timm factory with the 4-channel (R, G, B, Y) input and 28-class
head (`factory`), pretrained weights (ImageNet through timm, `imagenet`; weight files and run
checkpoints, `weights`), the checkpoint format and `ModelSpec` (`checkpoint`), and `runs export`
(`export`)."""
