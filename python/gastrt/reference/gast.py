"""Eager PyTorch reference of GAST-Net (fabro66/GAST-Net-3DPoseEstimation).

Module names, parameter shapes, registration order (hence state_dict key order) and the
forward operator sequence follow the original `model/gast_net.py`, `model/local_attention.py`
(channel-wise `SemCHGraphConv`) and `model/global_attention.py`, so original checkpoints load
with `strict=True` and produce the same numbers.

Layouts: B batch, T frames, J joints, C channels.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# LocalGraph's hard-coded joint tables, keyed by joint count (as in the original).
# Deliberately NOT taken from gastrt.skeletons, so the masks built here are an independent
# check of `skeletons.gast_masks`.
_LOCAL_GRAPH_TABLES = {
    17: dict(distal=[3, 6, 10, 13, 16], left=[4, 5, 6, 11, 12, 13], right=[1, 2, 3, 14, 15, 16]),  # Human3.6M
    16: dict(distal=[3, 6, 9, 12, 15], left=[4, 5, 6, 10, 11, 12], right=[1, 2, 3, 13, 14, 15]),   # H36M (SH)
    15: dict(distal=[4, 7, 10, 13], left=[2, 3, 4, 8, 9, 10], right=[5, 6, 7, 11, 12, 13]),        # HumanEva
    19: dict(distal=[3, 4, 7, 8, 12, 15, 18], left=[5, 6, 7, 8, 13, 14, 15],
             right=[1, 2, 3, 4, 16, 17, 18]),                                                   # H36M + toes
}


def _as_adj(adj) -> torch.Tensor:
    """The [J, J] adjacency as a float32 CPU tensor (accepts numpy or torch)."""
    if isinstance(adj, np.ndarray):
        adj = torch.from_numpy(adj)
    return adj.detach().to(device="cpu", dtype=torch.float32).clone()


class SemCHGraphConv(nn.Module):
    """Semantic channel-wise graph convolution (one learned logit per (out channel, edge)).

    Parameters: W [2, Cin, Cout] (W[0] self, W[1] neighbours), e [Cout, nnz(adj > 0)].
    The adjacency itself is not a parameter (not in the state_dict).
    """

    def __init__(self, in_features, out_features, adj, bias=False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        adj = _as_adj(adj)

        self.W = nn.Parameter(torch.zeros(2, in_features, out_features, dtype=torch.float))
        nn.init.xavier_uniform_(self.W.data, gain=1.414)

        pattern = adj.unsqueeze(0).repeat(out_features, 1, 1)          # [C, J, J]
        # Non-persistent buffers: follow .to(device) but stay out of the state_dict.
        self.register_buffer("adj", pattern, persistent=False)
        self.register_buffer("m", pattern > 0, persistent=False)
        eye = torch.eye(adj.size(0), dtype=torch.float, device=adj.device).unsqueeze(0).repeat(out_features, 1, 1)
        self.register_buffer("E", eye, persistent=False)                 # [C, J, J]

        nnz = int((adj > 0).sum())
        self.e = nn.Parameter(torch.zeros(out_features, nnz, dtype=torch.float))
        nn.init.constant_(self.e.data, 1)

        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=torch.float))
            stdv = 1.0 / math.sqrt(self.W.size(1))
            self.bias.data.uniform_(-stdv, stdv)
        else:
            self.register_parameter("bias", None)

    def forward(self, input):
        # input: [B, T, J, Cin] -> [B, T, J, Cout]
        h0 = torch.matmul(input, self.W[0]).unsqueeze(2).transpose(2, 4)  # [B, T, C, J, 1]
        h1 = torch.matmul(input, self.W[1]).unsqueeze(2).transpose(2, 4)  # [B, T, C, J, 1]

        adj = -9e15 * torch.ones_like(self.adj)                            # [C, J, J]
        adj[self.m] = self.e.view(-1)
        adj = F.softmax(adj, dim=2)

        E = self.E
        output = torch.matmul(adj * E, h0) + torch.matmul(adj * (1 - E), h1)
        output = output.transpose(2, 4).squeeze(2)                         # [B, T, J, C]

        if self.bias is not None:
            return output + self.bias.view(1, 1, -1)
        return output

    def extra_repr(self):
        return f"{self.in_features} -> {self.out_features}"


def local_graph_adjacencies(adj) -> tuple[torch.Tensor, torch.Tensor]:
    """LocalGraph's (adj_sym, adj_con) [J, J] built from the skeleton adjacency exactly as the
    original: symmetric = self + mirror joint; connectivity = 1st-order rows of A for proximal
    joints + 2nd-order rows of A^2 for distal joints. Only the pattern (> 0) is used."""
    adj = _as_adj(adj)
    num_joints = adj.shape[0]
    if num_joints not in _LOCAL_GRAPH_TABLES:
        raise KeyError("The dimension of adj matrix is wrong!")
    tab = _LOCAL_GRAPH_TABLES[num_joints]
    distal, left, right = tab["distal"], tab["left"], tab["right"]

    adj_sym = torch.zeros_like(adj)
    for i in range(num_joints):
        adj_sym[i, i] = 1.0
        if i in left:
            adj_sym[i, right[left.index(i)]] = 1.0
        if i in right:
            adj_sym[i, left[right.index(i)]] = 1.0

    adj_1st = adj.matrix_power(1)
    adj_2nd = adj.matrix_power(2)
    for i in range(num_joints):
        if i in distal:
            adj_1st[i] = 0
        else:
            adj_2nd[i] = 0
    adj_con = adj_1st + adj_2nd
    return adj_sym, adj_con


class LocalGraph(nn.Module):
    """Local attention: symmetric + connectivity SemCHGraphConvs, fused by a 1x1 conv.
    x: [B, T, J, Cin] -> [B, T, J, Cout]"""

    def __init__(self, adj, input_dim, output_dim, dropout=None):
        super().__init__()
        adj_sym, adj_con = local_graph_adjacencies(adj)

        self.gcn_sym = SemCHGraphConv(input_dim, output_dim, adj_sym)
        self.bn_1 = nn.BatchNorm2d(output_dim, momentum=0.1)
        self.gcn_con = SemCHGraphConv(input_dim, output_dim, adj_con)
        self.bn_2 = nn.BatchNorm2d(output_dim, momentum=0.1)
        self.relu = nn.ReLU()

        self.cat_conv = nn.Conv2d(2 * output_dim, output_dim, 1, bias=False)
        self.cat_bn = nn.BatchNorm2d(output_dim, momentum=0.1)

        self.dropout = nn.Dropout(dropout) if dropout is not None else None

    def forward(self, input):
        # input: [B, T, J, C]
        x = self.gcn_sym(input)
        y = self.gcn_con(input)

        x = x.permute(0, 3, 1, 2)          # [B, C, T, J]
        y = y.permute(0, 3, 1, 2)

        x = self.relu(self.bn_1(x))
        y = self.relu(self.bn_2(y))

        output = torch.cat((x, y), dim=1)
        output = self.cat_bn(self.cat_conv(output))

        if self.dropout is not None:
            output = self.dropout(self.relu(output))
        else:
            output = self.relu(output)
        return output.permute(0, 2, 3, 1)  # [B, T, J, C]


class GlobalGraph(nn.Module):
    """One global (non-local) attention head. x: [B*T, C, J] -> [B*T, Cg, J]."""

    def __init__(self, adj, in_channels, inter_channels=None):
        super().__init__()
        adj = _as_adj(adj)
        self.in_channels = in_channels
        self.inter_channels = inter_channels

        self.softmax = nn.Softmax(dim=-1)
        self.relu = nn.ReLU(inplace=True)
        self.leakyrelu = nn.LeakyReLU(0.2)

        if self.inter_channels == self.in_channels // 2:
            self.g_channels = self.in_channels
        else:
            self.g_channels = self.inter_channels
        assert self.inter_channels > 0

        self.g = nn.Conv1d(self.in_channels, self.g_channels, kernel_size=1, stride=1, padding=0)
        self.theta = nn.Conv1d(self.in_channels, self.inter_channels, kernel_size=1, stride=1, padding=0)
        self.phi = nn.Conv1d(self.in_channels, self.inter_channels, kernel_size=1, stride=1, padding=0)

        self.C_k = nn.Parameter(torch.zeros(adj.shape, dtype=torch.float))   # [J, J]

        self.concat_project = nn.Sequential(
            nn.Conv2d(self.inter_channels * 2, 1, 1, 1, 0, bias=False),
        )

        nn.init.kaiming_normal_(self.concat_project[0].weight)
        for conv in (self.g, self.theta, self.phi):
            nn.init.kaiming_normal_(conv.weight)
            nn.init.constant_(conv.bias, 0)

    def forward(self, x):
        batch_size = x.size(0)                                                  # x: [N, C, J]
        g_x = self.g(x).view(batch_size, self.g_channels, -1).permute(0, 2, 1)  # [N, J, Cg]

        theta_x = self.theta(x).view(batch_size, self.inter_channels, -1, 1)    # [N, Ck, J, 1]
        phi_x = self.phi(x).view(batch_size, self.inter_channels, 1, -1)        # [N, Ck, 1, J]
        h = theta_x.size(2)
        w = phi_x.size(3)
        theta_x = theta_x.expand(-1, -1, -1, w)                                 # [N, Ck, J, J]
        phi_x = phi_x.expand(-1, -1, h, -1)

        concat_feature = torch.cat([theta_x, phi_x], dim=1)                     # [N, 2Ck, J, J]
        f = self.concat_project(concat_feature)                                 # [N, 1, J, J]
        b, _, h, w = f.size()
        attention = self.leakyrelu(f.view(b, h, w))                             # [N, J, J]

        attention = torch.add(self.softmax(attention), self.C_k)
        y = torch.matmul(attention, g_x)                                        # [N, J, Cg]
        y = y.permute(0, 2, 1).contiguous()
        return y.view(batch_size, self.g_channels, *x.size()[2:])               # [N, Cg, J]


class MultiGlobalGraph(nn.Module):
    """in_channels // inter_channels global heads, concatenated and fused by a 1x1 conv.
    x: [B, T, J, C] -> [B, T, J, C]"""

    def __init__(self, adj, in_channels, inter_channels, dropout=None):
        super().__init__()
        self.num_non_local = in_channels // inter_channels
        self.attentions = nn.ModuleList(
            [GlobalGraph(adj, in_channels, inter_channels) for _ in range(self.num_non_local)])

        self.cat_conv = nn.Conv2d(in_channels, in_channels, 1, bias=False)
        self.cat_bn = nn.BatchNorm2d(in_channels, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout is not None else None

    def forward(self, x):
        x_size = x.shape
        x = x.contiguous()
        x = x.view(-1, *x_size[2:])        # [B*T, J, C]
        x = x.permute(0, 2, 1)             # [B*T, C, J]

        x = torch.cat([self.attentions[i](x) for i in range(len(self.attentions))], dim=1)

        x = x.permute(0, 2, 1).contiguous()  # [B*T, J, C]
        x = x.view(*x_size)                  # [B, T, J, C]

        x = x.permute(0, 3, 1, 2)            # [B, C, T, J]
        x = self.relu(self.cat_bn(self.cat_conv(x)))
        if self.dropout is not None:
            x = self.dropout(x)
        return x.permute(0, 2, 3, 1)         # [B, T, J, C]


class GraphAttentionBlock(nn.Module):
    """Residual + local + global graph attention, fused to 2*output_dim channels.
    x: [B, C, T, J] -> [B, 2C, T, J]"""

    def __init__(self, adj, input_dim, output_dim, p_dropout):
        super().__init__()
        hid_dim = output_dim
        self.relu = nn.ReLU(inplace=True)

        self.local_graph_layer = LocalGraph(adj, input_dim, hid_dim, p_dropout)
        self.global_graph_layer = MultiGlobalGraph(adj, input_dim, input_dim // 4, dropout=p_dropout)

        self.cat_conv = nn.Conv2d(3 * output_dim, 2 * output_dim, 1, bias=False)
        self.cat_bn = nn.BatchNorm2d(2 * output_dim, momentum=0.1)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)            # [B, T, J, C]
        residual = x
        x_ = self.local_graph_layer(x)
        y_ = self.global_graph_layer(x)
        x = torch.cat((residual, x_, y_), dim=-1)

        x = x.permute(0, 3, 1, 2)            # [B, 3C, T, J]
        return self.relu(self.cat_bn(self.cat_conv(x)))


class SpatioTemporalModelBase(nn.Module):
    """Do not instantiate this class."""

    def __init__(self, adj, num_joints_in, in_features, num_joints_out,
                 filter_widths, causal, dropout, channels):
        super().__init__()
        for fw in filter_widths:
            assert fw % 2 != 0, "Only odd filter widths are supported"

        self.num_joints_in = num_joints_in
        self.in_features = in_features
        self.num_joints_out = num_joints_out
        self.filter_widths = filter_widths

        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)

        self.pad = [filter_widths[0] // 2]
        self.init_bn = nn.BatchNorm2d(in_features, momentum=0.1)
        self.expand_bn = nn.BatchNorm2d(channels, momentum=0.1)
        # Channels double in every GraphAttentionBlock: the last one emits 2**L * channels.
        self.shrink = nn.Conv2d(2 ** len(self.filter_widths) * channels, 3, 1, bias=False)

    def receptive_field(self):
        """Total receptive field in frames."""
        return 1 + 2 * sum(self.pad)

    def total_causal_shift(self):
        """Asymmetric padding offset (0 unless causal, then half the receptive field)."""
        frames = self.causal_shift[0]
        next_dilation = self.filter_widths[0]
        for i in range(1, len(self.filter_widths)):
            frames += self.causal_shift[i] * next_dilation
            next_dilation *= self.filter_widths[i]
        return frames

    def forward(self, x):
        # x: [B, T, J, F] -> [B, T - RF + 1, J, 3]  (strided form: T == RF -> 1 frame)
        assert len(x.shape) == 4
        assert x.shape[-2] == self.num_joints_in
        assert x.shape[-1] == self.in_features

        x = self._forward_blocks(x)
        x = self.shrink(x)             # [B, 3, T', J]
        return x.permute(0, 2, 3, 1)   # [B, T', J, 3]


class SpatioTemporalModel(SpatioTemporalModelBase):
    """Full-sequence GAST-Net with dilated temporal convolutions (any T >= receptive field)."""

    def __init__(self, adj, num_joints_in, in_features, num_joints_out,
                 filter_widths, causal=False, dropout=0.25, channels=64, dense=False):
        super().__init__(adj, num_joints_in, in_features, num_joints_out, filter_widths, causal,
                         dropout, channels)

        self.expand_conv = nn.Conv2d(in_features, channels, (filter_widths[0], 1), bias=False)
        nn.init.kaiming_normal_(self.expand_conv.weight)

        layers_conv, layers_bn = [], []
        layers_graph_conv = [GraphAttentionBlock(adj, channels, channels, p_dropout=dropout)]

        self.causal_shift = [filter_widths[0] // 2 if causal else 0]
        next_dilation = filter_widths[0]
        for i in range(1, len(filter_widths)):
            self.pad.append((filter_widths[i] - 1) * next_dilation // 2)
            self.causal_shift.append((filter_widths[i] // 2 * next_dilation) if causal else 0)
            ch = 2 ** i * channels
            layers_conv.append(nn.Conv2d(ch, ch,
                                         (filter_widths[i], 1) if not dense else (2 * self.pad[-1] + 1, 1),
                                         dilation=(next_dilation, 1) if not dense else (1, 1),
                                         bias=False))
            layers_bn.append(nn.BatchNorm2d(ch, momentum=0.1))
            layers_conv.append(nn.Conv2d(ch, ch, 1, dilation=1, bias=False))
            layers_bn.append(nn.BatchNorm2d(ch, momentum=0.1))
            layers_graph_conv.append(GraphAttentionBlock(adj, ch, ch, p_dropout=dropout))
            next_dilation *= filter_widths[i]

        self.layers_conv = nn.ModuleList(layers_conv)
        self.layers_bn = nn.ModuleList(layers_bn)
        self.layers_graph_conv = nn.ModuleList(layers_graph_conv)

    def _forward_blocks(self, x):
        x = x.permute(0, 3, 1, 2)              # [B, F, T, J]
        x = self.init_bn(x)
        x = self.relu(self.expand_bn(self.expand_conv(x)))
        x = self.layers_graph_conv[0](x)

        for i in range(len(self.pad) - 1):
            pad = self.pad[i + 1]
            shift = self.causal_shift[i + 1]
            res = x[:, :, pad + shift: x.shape[2] - pad + shift]
            x = self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x)))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
            x = self.layers_graph_conv[i + 1](x)
        return x


class SpatioTemporalModelOptimized1f(SpatioTemporalModelBase):
    """Single-frame GAST-Net: strided instead of dilated convolutions (input T == receptive
    field -> 1 output frame). Weights are interchangeable with SpatioTemporalModel."""

    def __init__(self, adj, num_joints_in, in_features, num_joints_out,
                 filter_widths, causal=False, dropout=0.25, channels=64):
        super().__init__(adj, num_joints_in, in_features, num_joints_out, filter_widths, causal,
                         dropout, channels)

        self.expand_conv = nn.Conv2d(in_features, channels, (filter_widths[0], 1),
                                     stride=(filter_widths[0], 1), bias=False)
        nn.init.kaiming_normal_(self.expand_conv.weight)

        layers_conv, layers_bn = [], []
        layers_graph_conv = [GraphAttentionBlock(adj, channels, channels, p_dropout=dropout)]

        self.causal_shift = [(filter_widths[0] // 2) if causal else 0]
        next_dilation = filter_widths[0]
        for i in range(1, len(filter_widths)):
            self.pad.append((filter_widths[i] - 1) * next_dilation // 2)
            self.causal_shift.append((filter_widths[i] // 2) if causal else 0)
            ch = 2 ** i * channels
            layers_conv.append(nn.Conv2d(ch, ch, (filter_widths[i], 1), stride=(filter_widths[i], 1),
                                         bias=False))
            layers_bn.append(nn.BatchNorm2d(ch, momentum=0.1))
            layers_conv.append(nn.Conv2d(ch, ch, 1, dilation=1, bias=False))
            layers_bn.append(nn.BatchNorm2d(ch, momentum=0.1))
            layers_graph_conv.append(GraphAttentionBlock(adj, ch, ch, p_dropout=dropout))
            next_dilation *= filter_widths[i]

        self.layers_conv = nn.ModuleList(layers_conv)
        self.layers_bn = nn.ModuleList(layers_bn)
        self.layers_graph_conv = nn.ModuleList(layers_graph_conv)

    def _forward_blocks(self, x):
        x = x.permute(0, 3, 1, 2)              # [B, F, T, J]
        x = self.init_bn(x)
        x = self.relu(self.expand_bn(self.expand_conv(x)))
        x = self.layers_graph_conv[0](x)

        for i in range(len(self.pad) - 1):
            fw = self.filter_widths[i + 1]
            res = x[:, :, self.causal_shift[i + 1] + fw // 2:: fw]
            x = self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x)))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
            x = self.layers_graph_conv[i + 1](x)
        return x
