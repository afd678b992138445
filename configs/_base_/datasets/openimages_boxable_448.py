# Open Images V7 with its *real* partial labels, 448 x 448: human-verified
# image-level labels of the 600 boxable classes; verified present -> 1,
# verified absent -> 0, every other class -> -1 (unknown). No labels are
# hidden on top (no PartialLabelDataset); pipelines and evaluator are those
# of the COCO config. vocabulary='trainable' gives the full trainable
# vocabulary (oidv7-classes-trainable.txt).
_base_ = ['./coco14_partial_448.py']

dataset_type = 'OpenImagesMultiLabel'
# annotations/ with the official CSVs, train/ and validation/ with
# <ImageID>.jpg (docs/data.md)
data_root = 'data/openimages'
vocabulary = 'boxable'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        split='train',
        vocabulary=vocabulary,
        pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        split='validation',
        vocabulary=vocabulary,
        test_mode=True,
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
# no mask to save: the unknown labels are the dataset's own
custom_hooks = []
