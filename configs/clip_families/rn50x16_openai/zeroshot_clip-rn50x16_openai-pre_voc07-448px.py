# Zero-shot PASCAL VOC 2007 with OpenAI CLIP RN50x16 at 448 px: written
# prompts, 'a photo of a {}.' / 'a photo without a {}.', through the region
# aggregation of the prompt heads; nothing is trained.
_base_ = ('./dualcoop_clip-rn50x16_openai-pre_1xb32-'
          'coslr-50e_voc07-448px-p50.py')

model = dict(head=dict(type='ZeroShotHead'))
