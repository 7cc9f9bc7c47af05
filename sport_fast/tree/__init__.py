"""Stage 4b, shared-prefix tree packing: the trie (C++ with its Python twin), the packed batch, the tree
attention masks and the model body over a packed tree."""
