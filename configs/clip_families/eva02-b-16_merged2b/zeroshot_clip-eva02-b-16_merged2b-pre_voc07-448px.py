# Zero-shot PASCAL VOC 2007 with EVA02-CLIP-B/16 (timm tower) at 448 px:
# written prompts, 'a photo of a {}.' / 'a photo without a {}.', through the
# region aggregation of the prompt heads; nothing is trained.
_base_ = ('./dualcoop_clip-eva02-b-16_merged2b-pre_1xb32-'
          'coslr-50e_voc07-448px-p50.py')

model = dict(head=dict(type='ZeroShotHead'))
