"""The one data layer: readers of data files and the split types every data set comes as (numpy only, no torch).

    files.py   path_kind, read_data_file: a data path recognised by kind (.npz, .csv, image folder, IDX folder)
    splits.py  DatasetError; Split / ImageDataset, TextSplit / TextDataset; pool_splits, split_image_dataset,
               stratified_split
    tokens.py  EncodedSplit (token ids) and its batching: sorted_chunks, logits_by_length, at_length
    idx.py     IDX files and Fashion-MNIST        images.py  image folders (decoded with runtime.images)
    arrays.py  a user's .npz                      texts.py   a CSV of texts, the fine-food reviews (fine_foods/)

`compress bench` (bench/standalone.py) reads through read_data_file; the pipeline's data sources (compress/data/)
call the same readers and add the recipe's split policy. Import the module that holds a name; this file exports
nothing.
"""
