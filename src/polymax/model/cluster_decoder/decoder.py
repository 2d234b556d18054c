"""The kMaX transformer decoder: learned cluster centres refined by kMaX layers (spec §1.3).

PixelFeatures (os32, os16, os8 maps) → ClusterCentres. ``num_layers`` kMaX layers run on each of the
three pixel-decoder stages, coarse to fine (default 2 + 2 + 2). Each layer's auxiliary MaskPrediction
(at that layer's stride, computed on its *input* centres) is kept for deep supervision. The final
centres are projected twice: class embeddings and mask embeddings (B, K, E).

Drop query (kMaX paper §4, not in the official code; off by default): in training, a random subset of
the learned centres is used — ``drop_query`` is the dropped fraction (the paper drops half of 256).

Query groups: the shared group ``cluster_centres`` (K = ``num_queries``) serves every task without a group of
its own; ``group_sizes`` gives tasks their own learned centres (``task_centres[task]``, e.g. K = C for PolyMaX
semantic, 16 depth bins, 8 normal clusters next to a panoptic group). A pass runs one group, so each group has
its own softmax over K and its own k-means argmax.

Task conditioning (the hook a OneFormer-style model fills; off in every kMaX / PolyMaX preset): with
``task_names``, a learned embedding of the task being run is added to every initial centre, (B, K, E) + (E,),
so the same centres start from a task-dependent point and the whole decoder pass depends on the task.

Task-guided centres (OneFormer; ``task_queries="oneformer"``, the OneFormer and tiny multi-task presets): the
tasks of the shared group start from :class:`~polymax.model.cluster_decoder.task_queries.TaskGuidedQueries`
instead of a learned table — N − 1 queries read from the stride-4 pixel features under the task's prompt, plus
the task token — so the initial centres depend on the image and on the task; the six kMaX layers run unchanged.
Tasks with a group of their own keep their learned centres.

What a layer reads from its pixel map (its pixel projection, k-means values and auxiliary pixel embeddings) does
not depend on the centres: the passes of several query groups over one image share it (:meth:`read_pixels`), and
those modules' BatchNorms keep one set of statistics for every group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymax.model.cluster_decoder.layer import KMaXLayer
from polymax.model.cluster_decoder.task_queries import TaskGuidedQueries, prompt_ids
from polymax.model.layers.conv import LinearBN
from polymax.structures import ClusterCentres, PixelFeatures, PixelRead


class KMaXDecoder(nn.Module):
    def __init__(self, *, pixel_channels: tuple[int, int, int] = (2048, 1024, 512),
                 num_layers: tuple[int, int, int] = (2, 2, 2), num_queries: int, hidden: int = 256,
                 num_heads: int = 8, ffn: int = 2048, drop_path_keep: float = 1.0, mask_dim: int = 128,
                 pixel_head_channels: int = 256, drop_query: float = 0.0, group_sizes: dict[str, int] | None = None,
                 task_names: tuple[str, ...] = (), task_queries: str = "learned", high_res_channels: int = 256,
                 task_query_values: str = "sine") -> None:
        super().__init__()
        if not 0.0 <= drop_query < 1.0:
            raise ValueError(f"drop_query must be in [0, 1), got {drop_query}")
        if task_queries not in ("learned", "oneformer"):
            raise ValueError(f"task_queries must be 'learned' or 'oneformer', got {task_queries!r}")
        self.drop_query = drop_query
        self.num_layers = tuple(num_layers)
        # The shared group's N centres come from the task-guided module (no learned table then).
        guided = task_queries == "oneformer" and num_queries > 0
        self.task_queries = TaskGuidedQueries(num_queries=num_queries, feature_channels=high_res_channels,
                                              hidden=hidden, num_heads=num_heads, ffn=ffn,
                                              memory_values=task_query_values) if guided else None
        # No shared group when every task owns one (an unused parameter would stall DDP's gradient reduction).
        learned = num_queries > 0 and not guided
        self.cluster_centres = nn.Parameter(torch.empty(num_queries, hidden)) if learned else None
        if self.cluster_centres is not None:
            nn.init.trunc_normal_(self.cluster_centres, std=1.0)
        self.task_centres = nn.ParameterDict({task: nn.Parameter(torch.empty(size, hidden))
                                              for task, size in (group_sizes or {}).items()})
        for centres in self.task_centres.values():
            nn.init.trunc_normal_(centres, std=1.0)
        self.task_names = tuple(task_names)
        self.task_embedding = nn.Embedding(len(task_names), hidden) if task_names else None
        # Key depth = hidden / 2 (deeplab2: filters 128, key expansion 1, value expansion 2 → 256).
        self.layers = nn.ModuleList(
            KMaXLayer(pixel_channels=channels, hidden=hidden, num_heads=num_heads, key_channels=hidden // 2,
                      ffn=ffn, drop_path_keep=drop_path_keep, mask_dim=mask_dim,
                      pixel_head_channels=pixel_head_channels)
            for channels, count in zip(pixel_channels, num_layers) for _ in range(count))
        self.class_projection = LinearBN(hidden, hidden, activation=nn.GELU())
        self.mask_projection = LinearBN(hidden, hidden, activation=nn.GELU())

    @property
    def query_groups(self) -> tuple[str, ...]:
        """The names of the query groups: 'shared' (when there is a shared group), then each task's own."""
        shared = self.cluster_centres is not None or self.task_queries is not None
        return ("shared",) * shared + tuple(self.task_centres)

    def group_of(self, task: str | None) -> str:
        """The query group ``task`` runs on: its own, else the shared one."""
        return task if task in self.task_centres else "shared"

    def pass_key(self, task: str | None) -> str:
        """Tasks with equal keys share one decoder pass: the query group, or the task itself when conditioned."""
        if self.task_embedding is not None or task in self.task_centres or self.task_queries is not None:
            return f"task:{task}"
        return "shared"

    def guided_queries(self, task: str | tuple[str, ...] | None, high_res: Tensor | None) -> Tensor | None:
        """(B, N, E) the task-guided queries of ``task`` on ``high_res`` (B, C, h, w), or None when the task's
        centres are learned. ``task`` may also be a tuple of B names, one per image (a mixed-task batch)."""
        if isinstance(task, tuple):
            return self.mixed_queries(task, high_res)
        if self.task_queries is None or task in self.task_centres:
            return None
        if high_res is None:
            raise ValueError("task-guided centres read the stride-4 pixel features: pass high_res")
        ids = prompt_ids(str(task)).to(high_res.device).expand(high_res.shape[0], -1)         # (B, 77)
        return self.task_queries(high_res, ids).queries

    def batches_mixed_tasks(self, tasks: tuple[str, ...]) -> bool:
        """True when images under any of ``tasks`` can share one pass (each under its own prompt): task-guided
        centres of the shared group, no task embedding."""
        return self.task_queries is not None and self.task_embedding is None and not set(tasks) & set(self.task_centres)

    def mixed_queries(self, tasks: tuple[str, ...], high_res: Tensor | None) -> Tensor:
        """(B, N, E) task-guided queries with image b under the prompt of ``tasks[b]`` (one module pass)."""
        if self.task_queries is None or self.task_embedding is not None or set(tasks) & set(self.task_centres):
            raise ValueError("a batch of mixed tasks needs task-guided centres (task_queries='oneformer') and "
                             "tasks of the shared group")
        if high_res is None or len(tasks) != high_res.shape[0]:
            raise ValueError(f"{len(tasks)} task names for a batch of "
                             f"{None if high_res is None else high_res.shape[0]} images")
        ids = torch.stack([prompt_ids(name) for name in tasks]).to(high_res.device)          # (B, 77)
        return self.task_queries(high_res, ids).queries

    def initial_centres(self, batch: int, task: str | None = None, high_res: Tensor | None = None,
                        guided: Tensor | None = None) -> Tensor:
        """(B, K', E): the task's group of learned centres, or its task-guided queries (``guided``, else computed
        from ``high_res``), or a random subset of them when drop query is active; plus the task's embedding when
        the decoder is task-conditioned."""
        if guided is None:
            guided = self.guided_queries(task, high_res)
        centres = self.task_centres.get(task, self.cluster_centres) if guided is None else guided
        if centres is None:
            raise ValueError(f"task {task!r} has no query group of its own and this decoder has no shared group")
        if guided is None:
            centres = centres.unsqueeze(0).expand(batch, -1, -1)                            # (B, K, E)
        if self.training and self.drop_query > 0.0:
            keep = max(1, round(centres.shape[1] * (1.0 - self.drop_query)))
            index = torch.randperm(centres.shape[1], device=centres.device)[:keep].sort().values
            centres = centres[:, index]
        if self.task_embedding is not None:
            if task not in self.task_names:
                raise ValueError(f"this decoder is conditioned on tasks {list(self.task_names)}, got {task!r}")
            centres = centres + self.task_embedding.weight[self.task_names.index(task)]   # (B, K, E) + (E,)
        return centres

    def pixel_modules(self) -> tuple[nn.Module, ...]:
        """Every layer's modules that read only the pixel maps (see :meth:`read_pixels`)."""
        return tuple(module for layer in self.layers for module in layer.pixel_modules())

    def read_pixels(self, pixels: PixelFeatures) -> tuple[PixelRead, ...]:
        """Each layer's read of its pixel map (os32, os16, os8 in layer order). It does not depend on the centres,
        so the passes of several query groups over the same pixels share one read (``forward(reads=…)``)."""
        maps = (pixels.os32, pixels.os16, pixels.os8)
        layer_maps = [pixel_map for pixel_map, count in zip(maps, self.num_layers) for _ in range(count)]
        return tuple(layer.read(pixel_map) for layer, pixel_map in zip(self.layers, layer_maps))

    def forward(self, pixels: PixelFeatures, task: str | None = None,
                reads: tuple[PixelRead, ...] | None = None) -> ClusterCentres:
        """One pass of ``task``'s centres over ``pixels``; ``reads``: :meth:`read_pixels` of these pixels, when
        several passes share it (None reads them here)."""
        reads = self.read_pixels(pixels) if reads is None else reads
        guided = self.guided_queries(task, pixels.high_res)
        centres = self.initial_centres(pixels.os32.shape[0], task, guided=guided)
        predictions = []
        for layer, read in zip(self.layers, reads):
            centres, aux = layer(centres, read=read)
            predictions.append(aux)
        return ClusterCentres(class_embeddings=self.class_projection(centres),
                              mask_embeddings=self.mask_projection(centres), layers=predictions,
                              task_queries=guided)

