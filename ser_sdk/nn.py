"""Neural modules of the project's own models, built from ``speechbrain.nnet``.

They live in the package (not in ``recipes/``) because an exported model
directory names them in its ``hyperparams.yaml``; ``ser_sdk`` and
``speechbrain.inference`` both have to import them at load time.
"""

from __future__ import annotations

import torch
from speechbrain.lobes.models.ECAPA_TDNN import AttentiveStatisticsPooling
from speechbrain.nnet.CNN import Conv2d
from speechbrain.nnet.linear import Linear
from speechbrain.nnet.normalization import BatchNorm1d, BatchNorm2d
from speechbrain.nnet.RNN import GRU


class ConvBlock(torch.nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU, then max-pooling over time and frequency.

    Halving time in the front end is what keeps the CRNN cheap on a CPU: the
    GRU then runs at 25 frames per second, still fine enough for prosody.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_pool: int = 2,
        freq_pool: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = Conv2d(out_channels, kernel_size=(3, 3), in_channels=in_channels)
        self.norm1 = BatchNorm2d(input_size=out_channels)
        self.conv2 = Conv2d(out_channels, kernel_size=(3, 3), in_channels=out_channels)
        self.norm2 = BatchNorm2d(input_size=out_channels)
        self.pool = torch.nn.MaxPool2d(kernel_size=(time_pool, freq_pool), ceil_mode=True)
        self.dropout = torch.nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, time, freq, channels] (SpeechBrain's channels-last layout)
        x = torch.relu(self.norm1(self.conv1(x)))
        x = torch.relu(self.norm2(self.conv2(x)))
        x = self.dropout(self.pool(x.permute(0, 3, 1, 2)))
        return x.permute(0, 2, 3, 1)


class CRNN(torch.nn.Module):
    """Convolutional front end on log-mel, bidirectional GRU, attentive statistics pooling, embedding.

    Takes ``[batch, time, n_mels]`` features and relative lengths; returns
    ``[batch, 1, emb_dim]`` like SpeechBrain's ECAPA_TDNN, so either encoder fits
    the same recipe and inference code.
    """

    def __init__(
        self,
        n_mels: int = 80,
        conv_channels: tuple[int, ...] = (16, 32, 64),
        time_pools: tuple[int, ...] = (2, 2, 1),
        rnn_hidden: int = 128,
        rnn_layers: int = 1,
        emb_dim: int = 128,
        dropout: float = 0.15,
    ) -> None:
        super().__init__()
        blocks, in_channels, freq = [], 1, n_mels
        for channels, time_pool in zip(conv_channels, time_pools, strict=True):
            blocks.append(ConvBlock(in_channels, channels, time_pool=time_pool, dropout=dropout))
            in_channels, freq = channels, -(-freq // 2)
        self.conv = torch.nn.Sequential(*blocks)
        self.rnn = GRU(
            hidden_size=rnn_hidden,
            input_size=in_channels * freq,
            num_layers=rnn_layers,
            bidirectional=True,
            dropout=dropout if rnn_layers > 1 else 0.0,
        )
        self.pooling = AttentiveStatisticsPooling(2 * rnn_hidden, attention_channels=64, global_context=True)
        self.pool_norm = BatchNorm1d(input_size=4 * rnn_hidden)
        self.embedding = Linear(input_size=4 * rnn_hidden, n_neurons=emb_dim)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # Relative lengths stay valid after time pooling, so they pass to the GRU and pooling unchanged.
        x = self.conv(features.unsqueeze(-1))
        x = x.reshape(x.shape[0], x.shape[1], -1)
        x, _ = self.rnn(x, lengths=lengths)
        stats = self.pooling(x.transpose(1, 2), lengths=lengths).squeeze(-1)
        return self.embedding(self.pool_norm(stats)).unsqueeze(1)


class LinearClassifier(torch.nn.Module):
    """Embedding ``[batch, 1, emb_dim]`` -> class logits ``[batch, 1, n_classes]``."""

    def __init__(self, input_size: int, out_neurons: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = Linear(input_size=input_size, n_neurons=out_neurons)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(torch.relu(embeddings)))
