load dst=UB[0]:f32 src=gm[0]:f32 shape=[4,64] dst_strides=[64,1] src_strides=[64,1]
set_flag src=dma_in dst=vector id=0
wait_flag src=dma_in dst=vector id=0
vec.reduce_max dst=UB[1024]:f32 src=UB[0]:f32 shape=[4,64]
vec.sub dst=UB[0]:f32 a=UB[0]:f32 b=UB[1024]:f32/row shape=[4,64]
vec.exp dst=UB[0]:f32 src=UB[0]:f32 shape=[4,64]
vec.reduce_sum dst=UB[1088]:f32 src=UB[0]:f32 shape=[4,64]
vec.div dst=UB[0]:f32 a=UB[0]:f32 b=UB[1088]:f32/row shape=[4,64]
set_flag src=vector dst=dma_out id=1
wait_flag src=vector dst=dma_out id=1
store dst=gm[4096]:f32 src=UB[0]:f32 shape=[4,64] dst_strides=[64,1] src_strides=[64,1]
