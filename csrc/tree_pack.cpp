// Token-trie builder for shared-prefix tree packing: the C++ twin of sport_fast/trie_py.py.
//
// Same input, same algorithm, same output arrays (see that file's docstring):
//   1. insert each sequence below the root or below the end node of an earlier sequence, keyed by
//      (parent, token, salt) in one flat open-addressing table;
//   2. number nodes in DFS preorder (roots and children in creation order), so that the subtree of
//      node j is [j, subtree_end[j]).
// Children are always created after their parent, which lets both passes be plain linear sweeps.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;
using Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

namespace {

struct Key {
  int64_t parent, token, salt;
  bool operator==(const Key& o) const {
    return parent == o.parent && token == o.token && salt == o.salt;
  }
};

uint64_t hash_key(const Key& k) {
  uint64_t h = static_cast<uint64_t>(k.parent) * 0x9E3779B97F4A7C15ULL;
  h ^= static_cast<uint64_t>(k.token) + 0x7F4A7C159E3779B9ULL + (h << 6) + (h >> 2);
  h ^= static_cast<uint64_t>(k.salt) + 0x94D049BB133111EBULL + (h << 6) + (h >> 2);
  return h ^ (h >> 31);
}

// Open addressing with linear probing over flat arrays: no allocation per node, one cache line per
// probe. Sized once to at least twice the token count (the node count can only be smaller), so the
// load factor stays <= 0.5 and it never rehashes.
class ChildTable {
 public:
  explicit ChildTable(int64_t n_tokens) {
    size_t cap = 16;
    while (cap < static_cast<size_t>(2 * n_tokens + 1)) cap <<= 1;
    mask_ = cap - 1;
    keys_.resize(cap);
    values_.assign(cap, -1);
  }
  // The child stored under key, or -1 with *slot set to where it would go.
  int64_t find(const Key& key, size_t* slot) const {
    size_t i = hash_key(key) & mask_;
    while (values_[i] >= 0 && !(keys_[i] == key)) i = (i + 1) & mask_;
    *slot = i;
    return values_[i];
  }
  void insert_at(size_t slot, const Key& key, int64_t child) {
    keys_[slot] = key;
    values_[slot] = child;
  }

 private:
  size_t mask_;
  std::vector<Key> keys_;
  std::vector<int64_t> values_;
};

struct Trie {
  std::vector<int64_t> parent, token, salt;
  std::vector<int64_t> node_of_token;
};

// Step 1: walk or extend the trie for every sequence (creation-ordered nodes).
Trie insert_all(const int64_t* tokens, const int64_t* salts, const int64_t* offsets,
                const int64_t* starts, int64_t n_seq) {
  Trie t;
  const int64_t n_tok = offsets[n_seq];
  t.node_of_token.resize(n_tok);
  t.parent.reserve(n_tok);
  t.token.reserve(n_tok);
  t.salt.reserve(n_tok);
  ChildTable children(n_tok);
  std::vector<int64_t> end_node(n_seq, -1);
  for (int64_t i = 0; i < n_seq; ++i) {
    int64_t node = starts[i] < 0 ? -1 : end_node[starts[i]];
    for (int64_t p = offsets[i]; p < offsets[i + 1]; ++p) {
      const Key key{node, tokens[p], salts[p]};
      size_t slot;
      int64_t child = children.find(key, &slot);
      if (child < 0) {
        child = static_cast<int64_t>(t.parent.size());
        children.insert_at(slot, key, child);
        t.parent.push_back(node);
        t.token.push_back(tokens[p]);
        t.salt.push_back(salts[p]);
      }
      t.node_of_token[p] = node = child;
    }
    end_node[i] = node;
  }
  return t;
}

// Step 2: preorder index and exclusive subtree end of each creation-ordered node.
void preorder(const std::vector<int64_t>& parent, std::vector<int64_t>& pre,
              std::vector<int64_t>& size) {
  const int64_t n = static_cast<int64_t>(parent.size());
  size.assign(n, 1);
  for (int64_t c = n - 1; c >= 0; --c)
    if (parent[c] >= 0) size[parent[c]] += size[c];
  pre.assign(n, 0);
  std::vector<int64_t> next_free(n, 0);
  int64_t next_root = 0;
  for (int64_t c = 0; c < n; ++c) {
    const int64_t p = parent[c];
    if (p < 0) {
      pre[c] = next_root;
      next_root += size[c];
    } else {
      pre[c] = next_free[p];
      next_free[p] += size[c];
    }
    next_free[c] = pre[c] + 1;
  }
}

void check_inputs(const Array& tokens, const Array& salts, const Array& offsets,
                  const Array& starts) {
  const int64_t n_seq = static_cast<int64_t>(starts.size());
  if (offsets.size() != static_cast<py::ssize_t>(n_seq + 1))
    throw std::invalid_argument("offsets must have len(starts) + 1 entries");
  if (salts.size() != tokens.size())
    throw std::invalid_argument("salts must have one entry per token");
  const int64_t* o = offsets.data();
  const int64_t* s = starts.data();
  if (o[0] != 0 || o[n_seq] != static_cast<int64_t>(tokens.size()))
    throw std::invalid_argument("offsets must start at 0 and end at len(tokens)");
  for (int64_t i = 0; i < n_seq; ++i) {
    if (o[i + 1] < o[i]) throw std::invalid_argument("offsets must be non-decreasing");
    if (s[i] >= i) throw std::invalid_argument("starts[i] must name an earlier sequence or be -1");
  }
}

Array to_array(const std::vector<int64_t>& v) {
  Array out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

py::tuple build_trie(const Array& tokens, const Array& salts, const Array& offsets,
                     const Array& starts) {
  check_inputs(tokens, salts, offsets, starts);
  std::vector<int64_t> pre, size;
  Trie t;
  {
    py::gil_scoped_release release;
    t = insert_all(tokens.data(), salts.data(), offsets.data(), starts.data(),
                   static_cast<int64_t>(starts.size()));
    preorder(t.parent, pre, size);
  }
  const size_t n = t.parent.size();
  std::vector<int64_t> tok(n), slt(n), par(n), depth(n), end(n), seq(t.node_of_token.size());
  for (size_t c = 0; c < n; ++c) {
    const int64_t i = pre[c];
    tok[i] = t.token[c];
    slt[i] = t.salt[c];
    par[i] = t.parent[c] < 0 ? -1 : pre[t.parent[c]];
    end[i] = pre[c] + size[c];
  }
  for (size_t i = 0; i < n; ++i) depth[i] = par[i] < 0 ? 0 : depth[par[i]] + 1;  // parents precede
  for (size_t p = 0; p < seq.size(); ++p) seq[p] = pre[t.node_of_token[p]];
  return py::make_tuple(to_array(tok), to_array(slt), to_array(par), to_array(depth),
                        to_array(end), to_array(seq));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sport_fast C++ core: token-trie building for shared-prefix tree packing";
  m.def("build_trie", &build_trie, py::arg("tokens"), py::arg("salts"), py::arg("offsets"),
        py::arg("starts"),
        "Preorder token trie: returns (token, salt, parent, depth, subtree_end, seq_nodes).");
}
