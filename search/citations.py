"""BibTeX of the papers behind the registered pruning methods (the report's "Methods" section).

Keyed by method name as registered in ``prunebench.harness.pruning.METHODS``; each entry's title
is the one the method's ``MethodInfo.citation`` names (a test checks both ways: every method
whose citation names a paper has an entry here, and every entry names a registered method).
:data:`NO_PAPER` lists the registered names that cite no paper (the dense reference, random
filters).
"""

from __future__ import annotations

from collections.abc import Iterable

NO_PAPER = frozenset({"dense", "random"})

_ANTIDOTE = """@inproceedings{yu2020antidote,
  author    = {Yu, Fuxun and Liu, Chenchen and Wang, Di and Wang, Yanzhi and Chen, Xiang},
  title     = {{AntiDote}: Attention-based Dynamic Optimization for Neural Network Runtime
               Efficiency},
  booktitle = {Design, Automation and Test in Europe Conference (DATE)},
  year      = {2020},
}"""

BIBTEX: dict[str, str] = {
    "l1": """@inproceedings{li2017pruning,
  author    = {Li, Hao and Kadav, Asim and Durdanovic, Igor and Samet, Hanan and
               Graf, Hans Peter},
  title     = {Pruning Filters for Efficient {ConvNets}},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2017},
}""",
    "bn_scale": """@inproceedings{liu2017slimming,
  author    = {Liu, Zhuang and Li, Jianguo and Shen, Zhiqiang and Huang, Gao and Yan, Shoumeng
               and Zhang, Changshui},
  title     = {Learning Efficient Convolutional Networks through Network Slimming},
  booktitle = {IEEE International Conference on Computer Vision (ICCV)},
  year      = {2017},
}""",
    "fpgm": """@inproceedings{he2019fpgm,
  author    = {He, Yang and Liu, Ping and Wang, Ziwei and Hu, Zhilan and Yang, Yi},
  title     = {Filter Pruning via Geometric Median for Deep Convolutional Neural Networks
               Acceleration},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019},
}""",
    "aap": """@inproceedings{zhao2023aap,
  author    = {Zhao, Kaiqi and Jain, Animesh and Zhao, Ming},
  title     = {Automatic Attention Pruning: Improving and Automating Model Pruning using
               Attentions},
  booktitle = {International Conference on Artificial Intelligence and Statistics (AISTATS)},
  year      = {2023},
}""",
    "paam": """@misc{babaiee2022paam,
  author        = {Babaiee, Zahra and Liebenwein, Lucas and Hasani, Ramin and Rus, Daniela
                   and Grosu, Radu},
  title         = {Pruning by Active Attention Manipulation},
  year          = {2022},
  eprint        = {2210.11114},
  archivePrefix = {arXiv},
}""",
    "antidote": _ANTIDOTE,
    "antidote_fast": _ANTIDOTE,
    "instance_sparsity": """@inproceedings{liu2019instance,
  author    = {Liu, Chuanjian and Wang, Yunhe and Han, Kai and Xu, Chunjing and Xu, Chang},
  title     = {Learning Instance-wise Sparsity for Accelerating Deep Models},
  booktitle = {International Joint Conference on Artificial Intelligence (IJCAI)},
  year      = {2019},
}""",
}


def bibtex_for(methods: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the distinct BibTeX entries of ``methods``, in order; the methods with none known).

    Names in :data:`NO_PAPER` are in neither list.
    """
    entries: list[str] = []
    unknown: list[str] = []
    for name in dict.fromkeys(methods):
        if name in NO_PAPER:
            continue
        entry = BIBTEX.get(name)
        if entry is None:
            unknown.append(name)
        elif entry not in entries:
            entries.append(entry)
    return entries, unknown
