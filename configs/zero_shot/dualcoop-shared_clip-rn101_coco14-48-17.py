# Zero-shot / generalised zero-shot multi-label recognition on MS-COCO 2014,
# the 48/17 seen/unseen split (configs/_base_/datasets/
# coco14_zero-shot-48-17_448.py: trained on the 48 seen classes; mAP, F1@3,
# F1@5 over the 17 unseen and the 65 split classes). DualCoOp with ONE
# context shared by all classes (class_specific=False), so a class never
# trained on still gets a prompt: its name. Recipe otherwise as the DualCoOp
# paper configs (RN101, 448 px, 50 epochs).
_base_ = [
    '../_base_/models/dualcoop_clip-rn101.py',
    '../_base_/datasets/coco14_zero-shot-48-17_448.py',
    '../_base_/schedules/sgd-coslr-50e_dualcoop.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(classnames='COCO2014MultiLabel', class_specific=False))
