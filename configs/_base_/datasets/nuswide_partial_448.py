# NUS-WIDE (81 concepts) with partial training labels, 448 x 448: the
# pipelines, the partial-label wrapper and the evaluator of the COCO config;
# train on the official train list, test on the complete labels of the test
# list. Images without any of the 81 labels are dropped (empty='drop', as
# DualCoOp's filtered lists); empty='keep' keeps them with all-0 targets.
_base_ = ['./coco14_partial_448.py']

dataset_type = 'NUSWIDEMultiLabel'
# the official NUS-WIDE files and Flickr/ images (docs/data.md)
data_root = 'data/nus-wide'

train_dataloader = dict(
    dataset=dict(
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            split='train',
            empty='drop')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type, data_root=data_root, split='test', empty='drop'))
test_dataloader = val_dataloader
