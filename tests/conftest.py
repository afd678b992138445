# Copyright (c) mmcoop contributors. All rights reserved.
import torch

# The suite runs tiny models on 2 cores, often next to dataloader workers:
# one intra-op thread avoids oversubscription (and is deterministic).
torch.set_num_threads(1)
